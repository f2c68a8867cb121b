//! `net-pathway`: serve (default) or check a policy file.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use net_pathway::config::{Cli, Command, PolicyCommand, ServeConfig};
use net_pathway::engine::{Policy, PolicyError};
use net_pathway::store::pseudonym::Pseudonymiser;
use net_pathway::store::{DecisionLog, Store};
use net_pathway::{ActivePolicy, AppState};
use net_pathway::{reload, server, telemetry};

/// mimalloc: a decision allocates small, short-lived values on every worker thread, where it is
/// several times faster than the system allocator (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    // Kept to the end of serve(), so queued log lines are written before the process exits.
    let _log_flush = match telemetry::init(config.log_format) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("cannot start the log writer: {e}");
            return ExitCode::FAILURE;
        }
    };
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
        tokio::spawn(reload::watch_keys(
            auth.clone(),
            path,
            Duration::from_secs(seconds),
        ));
    }
    let log = match config.decision_log {
        net_pathway::config::Switch::On => DecisionLog::start(store).await?,
        net_pathway::config::Switch::Off => {
            tracing::warn!(
                "decision log OFF (--decision-log off): decisions are answered but not recorded; for benchmarks and research only"
            );
            DecisionLog::off(store)?
        }
    };
    let writer = log.clone();
    let state = AppState::new(policy.clone(), log, pseudonymiser, config.limits())?.with_auth(auth);
    let reloads = std::sync::Arc::new(net_pathway::ReloadCounters::default());
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
    tracing::info!(address = %listener.local_addr()?, build = %net_pathway::SERVICE_BUILD, "serving gRPC");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(address) = config.admin_listen.0 {
        match tokio::net::TcpListener::bind(address).await {
            Ok(admin) => {
                tracing::info!(address = %admin.local_addr()?, "serving metrics at /metrics");
                let (state, reloads) = (state.clone(), std::sync::Arc::clone(&reloads));
                tokio::spawn(async move {
                    let stopped = async {
                        let _ = admin_stopped.await;
                    };
                    if let Err(e) =
                        net_pathway::server::serve_admin(admin, state, reloads, stopped).await
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
    let health_listener = if let Some(address) = config.health_listen.0 {
        let health = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| format!("cannot listen on {address} for health: {e}"))?;
        tracing::info!(address = %health.local_addr()?, "serving plaintext health probes");
        Some(health)
    } else {
        None
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
    // One drain window covers the calls finishing and the decision log writing what they
    // handed it, so the orchestrator's grace period still holds both.
    let drained_by = tokio::time::Instant::now() + Duration::from_secs(config.drain_seconds);
    // tonic's graceful shutdown waits for every open stream; bound it.
    match tokio::time::timeout_at(drained_by, &mut server).await {
        Ok(finished) => finished??,
        Err(_) => tracing::warn!(
            seconds = config.drain_seconds,
            "drain timeout reached; closing open calls"
        ),
    }
    // A caller that went away may have left its decision queued: it is written before exit.
    let remaining = drained_by
        .saturating_duration_since(tokio::time::Instant::now())
        .max(Duration::from_secs(1));
    if writer.enabled() {
        if writer.close(remaining).await {
            tracing::info!("decision log closed");
        } else {
            tracing::error!(
                seconds = remaining.as_secs_f64(),
                "decision log writer did not finish in time; decisions still queued were never answered and are not recorded"
            );
        }
    }
    tracing::info!("stopped");
    Ok(())
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
