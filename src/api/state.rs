//! What every service shares: the active policy, the decision log, the pseudonymiser, the
//! limits and the places that enforce them, the metrics and the authenticator.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tonic::Status;

use crate::config::Limits;
use crate::engine::Policy;
use crate::store::DecisionLog;
use crate::store::pseudonym::Pseudonymiser;

/// What every service shares: the active policy, the decision log and its store, the
/// pseudonymiser, and the limits that protect the service under load.
#[derive(Clone, Debug)]
pub struct AppState {
    pub policy: ActivePolicy,
    pub log: DecisionLog,
    pub pseudonymiser: Pseudonymiser,
    pub limits: Limits,
    /// Places for calls in progress, the last of them kept for connections with few calls.
    pub admissions: crate::admission::Admissions,
    /// Places for patients being screened, shared by every ScreenCohort stream; a stream waits
    /// for a place rather than failing, which bounds memory however many streams are open.
    pub screening_places: Arc<tokio::sync::Semaphore>,
    /// Patients holding screening places now.
    pub screening_patients: Arc<std::sync::atomic::AtomicUsize>,
    /// Places for FULL-view unary answers being decided, recorded or sent; a FULL call waits
    /// for one within its deadline, unless as many already wait.
    pub full_answers: crate::admission::FullAnswers,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Who may call what; open (anonymous, every role) unless configured.
    pub auth: crate::auth::Authenticator,
    /// Becomes true when shutdown begins: streams stop taking new work.
    pub stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

impl AppState {
    pub fn new(
        policy: ActivePolicy,
        log: DecisionLog,
        pseudonymiser: Pseudonymiser,
        limits: Limits,
    ) -> Result<Self, prometheus::Error> {
        let admissions =
            crate::admission::Admissions::new(limits.max_concurrent_calls, limits.retry_after);
        let screening_places = Arc::new(tokio::sync::Semaphore::new(screening_capacity(&limits)));
        let full_answers = crate::admission::FullAnswers::new(limits.max_full_answers);
        let metrics = Arc::new(crate::metrics::Metrics::new(log.counters())?);
        Ok(AppState {
            policy,
            log,
            pseudonymiser,
            limits,
            admissions,
            screening_places,
            screening_patients: Arc::default(),
            full_answers,
            metrics,
            auth: crate::auth::Authenticator::open(),
            stopping: Arc::new(tokio::sync::watch::Sender::new(false)),
        })
    }

    /// Authenticates calls with `auth` instead of accepting every caller.
    pub fn with_auth(mut self, auth: crate::auth::Authenticator) -> Self {
        self.auth = auth;
        self
    }

    /// The caller the gate authenticated and authorized for this RPC (`crate::gate`). A call
    /// that did not pass the gate is refused.
    pub fn caller<T>(&self, request: &tonic::Request<T>) -> Result<crate::auth::Caller, Status> {
        request
            .extensions()
            .get::<crate::auth::Caller>()
            .cloned()
            .ok_or_else(|| {
                crate::errors::error(
                    crate::errors::Reason::Internal,
                    "the call did not pass the service's gate",
                )
            })
    }

    /// Patients being screened now, across every ScreenCohort stream.
    pub fn screening_in_progress(&self) -> usize {
        self.screening_patients
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The metrics text for a scrape, with the gauges read now.
    pub fn metrics_text(&self, reloads: &crate::metrics::ReloadCounters) -> String {
        let policy = self.policy.current();
        self.metrics.render(
            crate::metrics::Readings {
                policy_version: &policy.version,
                policy_hash: &policy.content_hash,
                log_queue: self.log.queue_depth(),
                log_enabled: self.log.enabled(),
                screening_in_progress: self.screening_in_progress(),
            },
            reloads,
        )
    }

    /// Admits a call from `connection` (`crate::admission`), or sheds it with
    /// RESOURCE_EXHAUSTED and a google.rpc.RetryInfo saying when to retry. The gate admits
    /// every call; the admission is held until its answer ends.
    pub fn admit(
        &self,
        connection: Option<std::net::SocketAddr>,
    ) -> Result<crate::admission::Admission, Status> {
        self.admissions
            .admit(connection)
            .map_err(|refused| self.overloaded(refused.0))
    }

    /// A shed call's answer: RESOURCE_EXHAUSTED with `message` and a google.rpc.RetryInfo
    /// saying when to retry.
    pub fn overloaded(&self, message: String) -> Status {
        let mut details = tonic_types::ErrorDetails::new();
        details.set_retry_info(Some(self.admissions.retry_after()));
        crate::errors::error_with(
            crate::errors::Reason::Overloaded,
            message,
            details,
            std::collections::HashMap::new(),
        )
    }
}

/// Places for patients being screened: at least one, so a stream can always make progress.
pub(crate) fn screening_capacity(limits: &Limits) -> usize {
    limits.max_screening_patients.max(1)
}

/// The active policy, shared by every service. Readers take an `Arc` snapshot without a lock,
/// so a call finishes on the policy it started with while a reload swaps in the next.
#[derive(Clone)]
pub struct ActivePolicy(Arc<ArcSwap<Policy>>);

impl std::fmt::Debug for ActivePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActivePolicy({})", self.current().version)
    }
}

impl ActivePolicy {
    pub fn new(policy: Policy) -> Self {
        ActivePolicy(Arc::new(ArcSwap::from_pointee(policy)))
    }

    pub fn current(&self) -> Arc<Policy> {
        self.0.load_full()
    }

    pub fn replace(&self, policy: Policy) {
        self.0.store(Arc::new(policy));
    }
}
