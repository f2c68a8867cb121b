//! Live policy reload: on SIGHUP, and when the policy file's content changes, the new file is
//! validated (with its example cases) and swapped in atomically. A failing file leaves the
//! active policy in place and is logged with file, line and reason. Calls in flight finish on
//! the policy snapshot they started with, and every answer names the version it used.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::api::ActivePolicy;
use crate::engine::{Policy, PolicyError};
use crate::metrics::ReloadCounters;

/// What one reload attempt did.
#[derive(Debug)]
pub(crate) enum Reloaded {
    /// The new version is active.
    Activated {
        version: String,
        content_hash: String,
    },
    /// The file's content is what is already active.
    Unchanged,
}

/// Validates `path` and, if it is good and different, makes it the active policy.
pub(crate) fn reload(
    active: &ActivePolicy,
    path: &Path,
    counters: &ReloadCounters,
) -> Result<Reloaded, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        file: path.display().to_string(),
        source,
    })?;
    let hash = format!("sha256:{:x}", Sha256::digest(text.as_bytes()));
    if hash == active.current().content_hash {
        return Ok(Reloaded::Unchanged);
    }
    match Policy::parse(&path.display().to_string(), &text) {
        Ok(policy) => {
            let outcome = Reloaded::Activated {
                version: policy.version.clone(),
                content_hash: policy.content_hash.clone(),
            };
            active.replace(policy);
            counters.succeeded.fetch_add(1, Ordering::Relaxed);
            Ok(outcome)
        }
        Err(e) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            Err(e)
        }
    }
}

fn attempt(active: &ActivePolicy, path: &Path, counters: &ReloadCounters, why: &str) {
    match reload(active, path, counters) {
        Ok(Reloaded::Activated {
            version,
            content_hash,
        }) => {
            tracing::info!(%version, %content_hash, reason = why, "policy reloaded and active")
        }
        Ok(Reloaded::Unchanged) => tracing::debug!(reason = why, "policy file unchanged"),
        Err(e) => {
            let active_version = active.current().version.clone();
            for issue in e.issues() {
                tracing::error!(file = %issue.file, line = issue.line, reason = %issue.reason, "policy reload refused");
            }
            tracing::error!(error = %e, %active_version, reason = why, "policy reload refused; the active policy stays");
        }
    }
}

/// Watches `path`: polls its content every `interval` and reloads on SIGHUP. Runs until the task
/// is dropped.
pub async fn watch(
    active: ActivePolicy,
    path: PathBuf,
    interval: Duration,
    counters: Arc<ReloadCounters>,
) {
    // The first look also reloads: the file may have changed since start-up, and an unchanged
    // file is recognised by its content hash.
    on_change_or_hangup(&path, interval, true, |why| {
        attempt(&active, &path, &counters, why)
    })
    .await
}

/// Key rotation: the JWKS file is re-read on SIGHUP and when it changes (a Kubernetes Secret
/// update arrives as a changed file). A bad file keeps the keys in use.
pub async fn watch_keys(auth: crate::auth::Authenticator, path: PathBuf, interval: Duration) {
    on_change_or_hangup(&path, interval, false, |why| match auth.reload_keys() {
        Ok(()) => tracing::info!(trigger = why, "JWKS reloaded"),
        Err(e) => tracing::error!(
            trigger = why,
            "JWKS reload refused; the keys in use stay: {e}"
        ),
    })
    .await
}

/// Calls `act` on SIGHUP, and when `path`'s size or modification time changes (checked every
/// `interval`; with `from_start`, the first check counts as a change). Runs until dropped.
async fn on_change_or_hangup(
    path: &Path,
    interval: Duration,
    from_start: bool,
    mut act: impl FnMut(&'static str),
) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| tracing::warn!("cannot listen for SIGHUP: {e}"))
        .ok();
    let seen = || {
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    let mut last_seen = if from_start { None } else { seen() };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hangup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        tokio::select! {
            () = signalled => act("SIGHUP"),
            _ = ticker.tick() => {
                // Cheap check first: only act when the file's size or time changed.
                let now = seen();
                if now.is_some() && now != last_seen {
                    last_seen = now;
                    act("file changed");
                }
            }
        }
    }
}
