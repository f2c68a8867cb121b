//! `net-pathway`: serve (default) or check a policy file.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use net_pathway::api::{ActivePolicy, AppState};
use net_pathway::config::{Cli, Command, PolicyCommand, ServeConfig};
use net_pathway::engine::{Policy, PolicyError};
use net_pathway::store::pseudonym::Pseudonymiser;
use net_pathway::store::{DecisionLog, Store};
use net_pathway::{reload, server, telemetry};

/// Exit code for a policy that cannot be read or is invalid.
const EXIT_INVALID_POLICY: u8 = 2;
/// Exit code for a valid policy whose example cases fail.
const EXIT_CASES_FAILED: u8 = 3;
/// Exit code for a listening address the security settings do not allow.
const EXIT_INSECURE: u8 = 4;

fn tls(config: &ServeConfig) -> Result<Option<tonic::transport::ServerTlsConfig>, String> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(
        tonic::transport::Identity::from_pem(read(cert)?, read(key)?),
    );
    if let Some(ca) = &config.tls_client_ca {
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

fn policy_exit(error: &PolicyError) -> ExitCode {
    match error {
        PolicyError::CasesFailed(_) => ExitCode::from(EXIT_CASES_FAILED),
        _ => ExitCode::from(EXIT_INVALID_POLICY),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Policy {
            action: PolicyCommand::Check { file },
        }) => match Policy::load_file(&file) {
            Ok(policy) => {
                println!(
                    "{}: policy {} ({}) is valid; {} example cases pass",
                    file.display(),
                    policy.version,
                    policy.content_hash,
                    policy.cases.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                policy_exit(&e)
            }
        },
        None => serve(cli.serve),
    }
}

fn serve(config: ServeConfig) -> ExitCode {
    telemetry::init(config.log_format);
    // With more than one rustls provider in the graph the TLS server would panic choosing one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(why) = config.check_exposure() {
        tracing::error!("{why}");
        return ExitCode::from(EXIT_INSECURE);
    }
    let loaded = match &config.policy {
        Some(path) => Policy::load_file(path),
        None => Policy::bundled(),
    };
    let policy = match loaded {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("refusing to start: {e}");
            return policy_exit(&e);
        }
    };
    tracing::info!(version = %policy.version, hash = %policy.content_hash, file = %policy.file, "policy active");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, ActivePolicy::new(policy))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: ServeConfig, policy: ActivePolicy) -> Result<(), Box<dyn std::error::Error>> {
    let url = config
        .database_url
        .clone()
        .unwrap_or_else(|| Store::default_url(&config.data_dir));
    let store = Store::open(&url)
        .await
        .map_err(|e| format!("refusing to start: {e}"))?;
    tracing::info!(
        backend = store.backend(),
        "decision log and registry store ready"
    );
    let key_file = config
        .pseudonym_key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("pseudonym.key"));
    let pseudonymiser =
        Pseudonymiser::load_or_create(&key_file).map_err(|e| format!("refusing to start: {e}"))?;
    let auth = config
        .authenticator()
        .map_err(|e| format!("refusing to start: {e}"))?;
    if auth.is_configured() {
        tracing::info!(
            bearer_tokens = config.jwks_file.is_some(),
            client_certificates = config.client_identities.is_some(),
            "caller authentication on"
        );
    } else {
        tracing::warn!("caller authentication off: every caller is 'anonymous' with every role");
    }
    if let Some(path) = config.jwks_file.clone() {
        let seconds = config.policy_poll_seconds.max(1);
        tokio::spawn(watch_keys(auth.clone(), path, Duration::from_secs(seconds)));
    }
    let log = match config.decision_log {
        net_pathway::config::Switch::On => DecisionLog::start(store),
        net_pathway::config::Switch::Off => {
            tracing::warn!(
                "decision log OFF (--decision-log off): decisions are answered but not recorded; for benchmarks and research only"
            );
            DecisionLog::off(store)
        }
    };
    let state = AppState::new(policy.clone(), log, pseudonymiser, config.limits())?.with_auth(auth);
    let reloads = std::sync::Arc::new(reload::ReloadCounters::default());
    if let Some(path) = config.policy.clone() {
        // Zero means SIGHUP only: the file is then looked at once a day at most.
        let seconds = if config.policy_poll_seconds == 0 {
            86_400
        } else {
            config.policy_poll_seconds
        };
        tokio::spawn(reload::watch(
            policy,
            path,
            Duration::from_secs(seconds),
            std::sync::Arc::clone(&reloads),
        ));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, "serving gRPC");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    if config.admin_listen != "off" {
        let address: std::net::SocketAddr = config
            .admin_listen
            .parse()
            .map_err(|e| format!("--admin-listen '{}': {e}", config.admin_listen))?;
        match tokio::net::TcpListener::bind(address).await {
            Ok(admin) => {
                tracing::info!(address = %admin.local_addr()?, "serving metrics at /metrics");
                let (state, reloads) = (state.clone(), std::sync::Arc::clone(&reloads));
                tokio::spawn(async move {
                    let stopped = async {
                        let _ = admin_stopped.await;
                    };
                    if let Err(e) =
                        net_pathway::metrics::serve_admin(admin, state, reloads, stopped).await
                    {
                        tracing::error!("admin listener failed: {e}");
                    }
                });
            }
            // Metrics are for operators; gRPC keeps serving without them, loudly.
            Err(e) => tracing::error!(
                "cannot serve metrics on {address}: {e}; continuing without the admin listener"
            ),
        }
    }
    let tls = tls(&config).map_err(|e| format!("refusing to start: {e}"))?;
    if tls.is_some() {
        tracing::info!(mutual = config.tls_client_ca.is_some(), "TLS on");
    }
    let health_listener = if config.health_listen == "off" {
        None
    } else {
        let address: std::net::SocketAddr = config
            .health_listen
            .parse()
            .map_err(|e| format!("--health-listen '{}': {e}", config.health_listen))?;
        let health = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| format!("cannot listen on {address} for health: {e}"))?;
        tracing::info!(address = %health.local_addr()?, "serving plaintext health probes");
        Some(health)
    };
    let mut server = tokio::spawn(server::serve_with_health(
        listener,
        health_listener,
        state,
        tls,
        async {
            let _ = stop_rx.await;
        },
    ));
    tokio::select! {
        finished = &mut server => return Ok(finished??),
        () = shutdown_signal() => {}
    }
    let _ = stop_tx.send(());
    let _ = admin_stop.send(());
    // tonic's graceful shutdown waits for every open stream; bound it.
    match tokio::time::timeout(Duration::from_secs(config.drain_seconds), &mut server).await {
        Ok(finished) => finished??,
        Err(_) => tracing::warn!(
            seconds = config.drain_seconds,
            "drain timeout reached; closing open calls"
        ),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Key rotation: the JWKS file is re-read on SIGHUP and when it changes (a Kubernetes Secret
/// update arrives as a changed file). A bad file keeps the keys in use.
async fn watch_keys(
    auth: net_pathway::auth::Authenticator,
    path: std::path::PathBuf,
    interval: Duration,
) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| tracing::warn!("cannot listen for SIGHUP: {e}"))
        .ok();
    let seen = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    let mut last_seen = seen(&path);
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
        let why = tokio::select! {
            () = signalled => "SIGHUP",
            _ = ticker.tick() => {
                let now = seen(&path);
                if now.is_none() || now == last_seen {
                    continue;
                }
                last_seen = now;
                "file changed"
            }
        };
        match auth.reload_keys() {
            Ok(()) => tracing::info!(trigger = why, "JWKS reloaded"),
            Err(e) => tracing::error!(
                trigger = why,
                "JWKS reload refused; the keys in use stay: {e}"
            ),
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM: {e}");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
