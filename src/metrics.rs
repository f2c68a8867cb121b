//! Prometheus metrics and the admin HTTP listener that serves them (`GET /metrics`).
//! No label carries a patient identifier or a clinical value.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::api::AppState;
use crate::reload::ReloadCounters;

/// Latency buckets, seconds: from tens of microseconds (a cached policy decision) to seconds.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    calls: IntCounterVec,
    latency: HistogramVec,
    decisions: IntCounterVec,
    log_write: HistogramVec,
    log_queue: IntGauge,
    log_enabled: IntGauge,
    policy_info: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let calls = IntCounterVec::new(
            Opts::new(
                "netpathway_calls_total",
                "gRPC calls by method and status code.",
            ),
            &["method", "code"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "netpathway_call_duration_seconds",
                "gRPC call latency by method.",
            )
            .buckets(BUCKETS.to_vec()),
            &["method"],
        )?;
        let decisions = IntCounterVec::new(
            Opts::new(
                "netpathway_decisions_total",
                "Per-therapy answers by kind (eligibility or funding), therapy and outcome.",
            ),
            &["kind", "therapy", "outcome"],
        )?;
        let log_write = HistogramVec::new(
            HistogramOpts::new(
                "netpathway_decision_log_write_seconds",
                "Time to record a decision durably (group commit included).",
            )
            .buckets(BUCKETS.to_vec()),
            &[],
        )?;
        let log_queue = IntGauge::new(
            "netpathway_decision_log_queue_depth",
            "Decisions waiting for the decision log writer.",
        )?;
        let log_enabled = IntGauge::new(
            "netpathway_decision_log_enabled",
            "1 when decisions are recorded; 0 when the decision log is switched off.",
        )?;
        let policy_info = IntGaugeVec::new(
            Opts::new("netpathway_policy_info", "The active policy (value 1)."),
            &["version", "content_hash"],
        )?;
        for collector in [
            Box::new(calls.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(decisions.clone()),
            Box::new(log_write.clone()),
            Box::new(log_queue.clone()),
            Box::new(log_enabled.clone()),
            Box::new(policy_info.clone()),
        ] {
            registry.register(collector)?;
        }
        Ok(Metrics {
            registry,
            calls,
            latency,
            decisions,
            log_write,
            log_queue,
            log_enabled,
            policy_info,
        })
    }

    /// Records one finished call.
    pub fn call(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        self.calls
            .with_label_values(&[method, &format!("{code:?}")])
            .inc();
        self.latency
            .with_label_values(&[method])
            .observe(elapsed.as_secs_f64());
    }

    /// Records one per-therapy answer.
    pub fn decision(&self, kind: &str, therapy: &str, outcome: &str) {
        self.decisions
            .with_label_values(&[kind, therapy, outcome])
            .inc();
    }

    pub fn log_write(&self, elapsed: Duration) {
        self.log_write
            .with_label_values(&[] as &[&str])
            .observe(elapsed.as_secs_f64());
    }

    /// The metrics text, with the gauges read from `state` now.
    pub fn render(&self, state: &AppState, reloads: &ReloadCounters) -> String {
        let policy = state.policy.current();
        self.policy_info.reset();
        self.policy_info
            .with_label_values(&[policy.version.as_str(), policy.content_hash.as_str()])
            .set(1);
        self.log_queue
            .set(i64::try_from(state.log.queue_depth()).unwrap_or(i64::MAX));
        self.log_enabled.set(i64::from(state.log.enabled()));
        let mut buffer = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!("cannot encode metrics: {e}");
        }
        let mut text = String::from_utf8_lossy(&buffer).into_owned();
        text.push_str(&format!(
            "# HELP netpathway_policy_reloads_total Policy reloads by outcome.\n# TYPE netpathway_policy_reloads_total counter\n\
             netpathway_policy_reloads_total{{outcome=\"succeeded\"}} {}\nnetpathway_policy_reloads_total{{outcome=\"failed\"}} {}\n",
            reloads.succeeded.load(Ordering::Relaxed),
            reloads.failed.load(Ordering::Relaxed)
        ));
        text
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    state: AppState,
    reloads: Arc<ReloadCounters>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (state, reloads) = (state.clone(), Arc::clone(&reloads));
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    state.metrics.render(&state, &reloads),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
