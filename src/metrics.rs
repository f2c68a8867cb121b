//! Prometheus metrics: the counters and histograms calls and answers update, and their text
//! for a scrape (the admin listener in `crate::server` serves it). No label carries a patient
//! identifier or a clinical value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Reload outcomes, for operators and metrics.
#[derive(Debug, Default)]
pub struct ReloadCounters {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
}

/// What the gauges show, read from the service when it is scraped.
pub struct Readings<'a> {
    pub policy_version: &'a str,
    pub policy_hash: &'a str,
    pub log_queue: usize,
    pub log_enabled: bool,
    pub screening_in_progress: usize,
}

/// Latency buckets, seconds: from tens of microseconds (a cached policy decision) to seconds.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];

/// Label values a per-therapy answer can carry: proto enum numbers stay well below this.
const ENUM_SPAN: usize = 32;

/// A metric series found once by its labels and kept: every call and every answer updates
/// one, and a label lookup (hashing, a lock, a formatted status code) each time would cost
/// more than the decision.
struct Series<T>(Vec<std::sync::OnceLock<T>>);

impl<T> Series<T> {
    fn new(len: usize) -> Self {
        Series((0..len).map(|_| std::sync::OnceLock::new()).collect())
    }

    /// The series at `index`, found by `find` the first time; `None` past the end.
    fn get(&self, index: usize, find: impl FnOnce() -> T) -> Option<&T> {
        self.0.get(index).map(|cell| cell.get_or_init(find))
    }
}

/// gRPC status codes (0-16).
const CODES: usize = 17;
/// Methods whose series are kept; more would be looked up by label each time.
const MAX_METHODS: usize = 32;

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    calls: IntCounterVec,
    latency: HistogramVec,
    /// (method, code) and method series, by position in `methods`.
    methods: std::sync::RwLock<Vec<&'static str>>,
    call_series: Series<prometheus::IntCounter>,
    latency_series: Series<prometheus::Histogram>,
    decisions: IntCounterVec,
    /// Per-therapy answer series, by kind, therapy and outcome number.
    decision_series: Series<prometheus::IntCounter>,
    log_write: HistogramVec,
    log_queue: IntGauge,
    log_enabled: IntGauge,
    screening_in_progress: IntGauge,
    unread_answers: prometheus::IntCounter,
    policy_info: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub(crate) fn new(commits: &crate::store::CommitCounters) -> Result<Self, prometheus::Error> {
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
        let screening_in_progress = IntGauge::new(
            "netpathway_screening_patients_in_progress",
            "Patients being screened across all ScreenCohort streams (at most --max-screening-patients).",
        )?;
        let unread_answers = prometheus::IntCounter::new(
            "netpathway_unread_answers_dropped_total",
            "Unary answers dropped because their caller took none of them for --unread-answer-seconds (what the calls recorded stays recorded).",
        )?;
        let policy_info = IntGaugeVec::new(
            Opts::new("netpathway_policy_info", "The active policy (value 1)."),
            &["version", "content_hash"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "netpathway_build_info",
                "This build of the service (value 1): version and commit, as answers name it.",
            ),
            &["build"],
        )?;
        build_info.with_label_values(&[crate::SERVICE_BUILD]).set(1);
        for collector in [
            Box::new(calls.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(build_info),
            Box::new(latency.clone()),
            Box::new(decisions.clone()),
            Box::new(log_write.clone()),
            Box::new(log_queue.clone()),
            Box::new(log_enabled.clone()),
            Box::new(screening_in_progress.clone()),
            Box::new(unread_answers.clone()),
            Box::new(policy_info.clone()),
            Box::new(commits.commits.clone()),
            Box::new(commits.records.clone()),
            Box::new(commits.seconds.clone()),
        ] {
            registry.register(collector)?;
        }
        // CPU seconds, resident memory, open files and threads under the process_* names that
        // dashboards expect: the memory budget (docs/performance.md) is watched here in service.
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            calls,
            latency,
            methods: std::sync::RwLock::new(Vec::new()),
            call_series: Series::new(MAX_METHODS * CODES),
            latency_series: Series::new(MAX_METHODS),
            decisions,
            decision_series: Series::new(2 * ENUM_SPAN * ENUM_SPAN),
            log_write,
            log_queue,
            log_enabled,
            screening_in_progress,
            unread_answers,
            policy_info,
        })
    }

    /// The method's position among those seen, adding it the first time.
    fn method_index(&self, method: &'static str) -> usize {
        let known = |methods: &[&'static str]| methods.iter().position(|m| *m == method);
        if let Some(i) = self.methods.read().ok().as_deref().and_then(|m| known(m)) {
            return i;
        }
        match self.methods.write() {
            Ok(mut methods) => known(&methods).unwrap_or_else(|| {
                methods.push(method);
                methods.len() - 1
            }),
            Err(_) => usize::MAX,
        }
    }

    /// Records one finished call.
    pub fn call(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        let m = self.method_index(method);
        let code_label = || format!("{code:?}");
        let calls = || self.calls.with_label_values(&[method, &code_label()]);
        match self
            .call_series
            .get(m.saturating_mul(CODES).saturating_add(code as usize), calls)
        {
            Some(counter) => counter.inc(),
            None => calls().inc(),
        }
        let latency = || self.latency.with_label_values(&[method]);
        match self.latency_series.get(m, latency) {
            Some(histogram) => histogram.observe(elapsed.as_secs_f64()),
            None => latency().observe(elapsed.as_secs_f64()),
        }
    }

    /// Records one per-therapy eligibility answer.
    pub fn eligibility(&self, therapy: crate::pb::Therapy, status: crate::pb::EligibilityStatus) {
        self.decision(0, therapy, status as usize, status.as_str_name());
    }

    /// Records one per-therapy funding answer.
    pub fn funding(&self, therapy: crate::pb::Therapy, route: crate::pb::FundingRoute) {
        self.decision(1, therapy, route as usize, route.as_str_name());
    }

    fn decision(&self, kind: usize, therapy: crate::pb::Therapy, outcome: usize, label: &str) {
        let find = || {
            self.decisions.with_label_values(&[
                ["eligibility", "funding"][kind],
                therapy.as_str_name(),
                label,
            ])
        };
        let (t, o) = (therapy as usize, outcome);
        let index = if t < ENUM_SPAN && o < ENUM_SPAN {
            (kind * ENUM_SPAN + t) * ENUM_SPAN + o
        } else {
            usize::MAX
        };
        match self.decision_series.get(index, find) {
            Some(counter) => counter.inc(),
            None => find().inc(),
        }
    }

    /// Counts answers dropped because their caller did not read them (`crate::gate`).
    pub fn unread_answers(&self) -> prometheus::IntCounter {
        self.unread_answers.clone()
    }

    pub fn log_write(&self, elapsed: Duration) {
        self.log_write
            .with_label_values(&[] as &[&str])
            .observe(elapsed.as_secs_f64());
    }

    /// The metrics text, with the gauges set from `now`.
    pub fn render(&self, now: Readings<'_>, reloads: &ReloadCounters) -> String {
        self.policy_info.reset();
        self.policy_info
            .with_label_values(&[now.policy_version, now.policy_hash])
            .set(1);
        self.log_queue
            .set(i64::try_from(now.log_queue).unwrap_or(i64::MAX));
        self.log_enabled.set(i64::from(now.log_enabled));
        self.screening_in_progress
            .set(i64::try_from(now.screening_in_progress).unwrap_or(i64::MAX));
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
