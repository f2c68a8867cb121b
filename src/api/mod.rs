//! gRPC adapters: decode and validate the request, call the engine, encode the answer.
//! `tonic::Status` is built only here; no clinical logic lives here.

/// Runs a handler body inside the call's span (method, trace id, caller, decision id: every
/// log line of the call carries them), records the call in the metrics, logs one line when it
/// finishes, and returns the trace id to the caller as `x-trace-id`. The call ends inside the
/// span, also when its caller goes away: dropping an instrumented future enters its span.
macro_rules! observed {
    ($state:expr, $method:literal, $request:ident, $body:block) => {{
        let (call, span) = crate::api::Call::start($method, $request.metadata(), &*$state.metrics);
        tracing::Instrument::instrument(
            async move {
                let result: Result<_, tonic::Status> = async move { $body }.await;
                let code = result
                    .as_ref()
                    .map_or_else(|s: &tonic::Status| s.code(), |_| tonic::Code::Ok);
                let trace_id = call.finish(code);
                crate::telemetry::with_trace_id(result, &trace_id)
            },
            span,
        )
        .await
    }};
}

#[cfg(test)]
mod clinical_cases;
pub mod convert;
mod decisions;
pub(crate) mod eligibility;
mod errors;
pub(crate) mod funding;
mod policy;
mod record;
mod registry;
mod screening;

use std::sync::Arc;

use arc_swap::ArcSwap;

use chrono::NaiveDate;
use tonic::Status;
use tonic::codegen::http::HeaderName;

use crate::config::Limits;
use crate::domain::{Patient, Therapy};
use crate::engine::Policy;
use crate::google::r#type::Date as ProtoDate;
use crate::pb;
use convert::{Bridge, Reader};

pub use decisions::DecisionLogApi;
pub use eligibility::EligibilityApi;
pub use errors::invalid_argument;
pub use funding::FundingApi;
pub use policy::PolicyApi;
pub use registry::RegistryApi;
pub use screening::ScreeningApi;

use crate::store::DecisionLog;
use crate::store::pseudonym::{Pseudonymiser, valid_nhs_number};

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

    /// The caller the gate authenticated and authorized for this RPC (`crate::gate`); the
    /// identity joins the call's span. A call that did not pass the gate is refused.
    pub fn caller<T>(&self, request: &tonic::Request<T>) -> Result<crate::auth::Caller, Status> {
        let caller = request
            .extensions()
            .get::<crate::auth::Caller>()
            .cloned()
            .ok_or_else(|| Status::internal("the call did not pass the service's gate"))?;
        tracing::Span::current().record("caller", caller.identity.as_str());
        Ok(caller)
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
        <Status as tonic_types::StatusExt>::with_error_details(
            tonic::Code::ResourceExhausted,
            message,
            details,
        )
    }
}

/// Places for patients being screened: at least one, so a stream can always make progress.
pub(crate) fn screening_capacity(limits: &Limits) -> usize {
    limits.max_screening_patients.max(1)
}

/// When the call must be answered by: the caller's `grpc-timeout`, capped by the server's limit.
pub fn deadline<T>(request: &tonic::Request<T>, limits: &Limits) -> tokio::time::Instant {
    // A ready-made header name: looking up by text parses and checks the name on every call.
    const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
    let asked = AsRef::<tonic::codegen::http::HeaderMap>::as_ref(request.metadata())
        .get(&GRPC_TIMEOUT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .unwrap_or(limits.max_deadline);
    tokio::time::Instant::now() + asked.min(limits.max_deadline)
}

/// gRPC's `grpc-timeout` header: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// DEADLINE_EXCEEDED once the deadline has passed: checked before any work and before the
/// decision is recorded, so a call that is already too late does nothing and writes nothing.
pub fn in_time(deadline: tokio::time::Instant) -> Result<(), Status> {
    if tokio::time::Instant::now() >= deadline {
        Err(Status::deadline_exceeded(
            "the call's deadline passed before it could be answered; nothing was recorded",
        ))
    } else {
        Ok(())
    }
}

/// Longest local patient reference accepted.
const MAX_LOCAL_REFERENCE: usize = 64;

/// Validates patient identifiers and returns the pseudonym the service indexes the patient
/// by: the NHS number's, or failing that the local reference's. The raw values go no further.
pub fn patient_pseudonym(
    r: &mut Reader,
    pseudonymiser: &Pseudonymiser,
    (nhs_field, nhs_number): (&str, &str),
    (local_field, local_reference): (&str, &str),
) -> Option<String> {
    let nhs = if nhs_number.is_empty() {
        None
    } else {
        match valid_nhs_number(nhs_number) {
            Ok(digits) => Some(pseudonymiser.nhs_number(&digits)),
            Err(why) => {
                r.violation(nhs_field, why);
                None
            }
        }
    };
    let local = if local_reference.is_empty() {
        None
    } else if local_reference.chars().count() > MAX_LOCAL_REFERENCE
        || local_reference.chars().any(char::is_control)
    {
        r.violation(
            local_field,
            format!("must be at most {MAX_LOCAL_REFERENCE} printable characters"),
        );
        None
    } else {
        Some(pseudonymiser.local_reference(local_reference.trim()))
    };
    nhs.or(local)
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

/// Today's date (UTC): the default as-of date and the bound for "not in the future".
pub fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

/// Earliest as-of date accepted: the service holds no facts from before it.
fn earliest_as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or(NaiveDate::MIN)
}

/// A validated evaluation request, shared by eligibility and funding.
#[derive(Clone)]
pub struct Evaluation {
    pub request_id: String,
    /// Boxed: an evaluation moves through several futures on its way to the answer, and the
    /// patient is most of its size.
    pub patient: Box<Patient>,
    pub therapies: Vec<Therapy>,
    pub as_of: NaiveDate,
    pub full: bool,
    /// The patient's pseudonym, when identifiers were given.
    pub pseudonym: Option<String>,
}

impl Evaluation {
    /// How much the answers say: the FULL view shows every criterion's values and explanation.
    pub fn detail(&self) -> crate::engine::Detail {
        if self.full {
            crate::engine::Detail::EXPLAINED
        } else {
            crate::engine::Detail::OUTCOME
        }
    }
}

/// Reads the fields both evaluation RPCs share, collecting every violation.
pub fn read_evaluation(
    pseudonymiser: &Pseudonymiser,
    request_id: &str,
    patient: Option<&pb::PatientProfile>,
    therapies: &[i32],
    as_of: Option<&ProtoDate>,
    view: i32,
) -> Result<Evaluation, Status> {
    let today = today();
    let mut r = Reader::default();
    if !request_id.is_empty() && uuid::Uuid::try_parse(request_id).is_err() {
        r.violation(
            "request_id",
            "must be empty or a UUID such as 0b0e1c4e-5f5a-4d8e-9d3c-2f1e6a7b8c9d",
        );
    }
    let therapies = requested_therapies(&mut r, therapies);
    let as_of = match r.date("as_of_date", as_of) {
        Some(d) if d > today => {
            r.violation(
                "as_of_date",
                format!("{d} is in the future (today is {today})"),
            );
            today
        }
        Some(d) if d < earliest_as_of() => {
            r.violation("as_of_date", format!("{d} is before {}", earliest_as_of()));
            today
        }
        Some(d) => d,
        None => today,
    };
    let full = match r.enumeration::<ViewChoice>("view", view) {
        Some(ViewChoice::Basic) => false,
        Some(ViewChoice::Full) | None => true,
    };
    let pseudonym = patient
        .and_then(|p| p.identifiers.as_ref())
        .and_then(|ids| {
            patient_pseudonym(
                &mut r,
                pseudonymiser,
                ("patient.identifiers.nhs_number", &ids.nhs_number),
                (
                    "patient.identifiers.local_patient_reference",
                    &ids.local_patient_reference,
                ),
            )
        });
    let patient = match patient {
        Some(p) => {
            let patient = r.patient(p);
            for v in patient.validate(today, as_of) {
                r.violation(format!("patient.{}", v.field), v.description);
            }
            patient
        }
        None => {
            r.violation("patient", "is required");
            Patient::default()
        }
    };
    if !r.violations.is_empty() {
        return Err(invalid_argument(&r.violations));
    }
    Ok(Evaluation {
        request_id: request_id.to_string(),
        patient: Box::new(patient),
        therapies,
        as_of,
        full,
        pseudonym,
    })
}

/// The therapy filter: known, specified, no duplicates; empty means all, in enum order.
pub fn requested_therapies(r: &mut Reader, raw: &[i32]) -> Vec<Therapy> {
    let mut therapies: Vec<Therapy> = Vec::with_capacity(raw.len());
    for (i, value) in raw.iter().enumerate() {
        let field = || format!("therapies[{i}]");
        let Some(therapy) = r.list_entry::<Therapy>(field, *value) else {
            continue;
        };
        if therapies.contains(&therapy) {
            r.violation(field(), format!("{therapy} is listed more than once"));
        } else {
            therapies.push(therapy);
        }
    }
    if raw.is_empty() {
        therapies = Therapy::ALL.to_vec();
    }
    therapies.sort();
    therapies
}

/// Whether a request's view asks for the FULL answer: an unset view is FULL (common.proto); an
/// unknown one is refused by validation, and counts as FULL until then.
pub(crate) fn asks_full(view: i32) -> bool {
    view != pb::EvaluationView::Basic as i32
}

/// The view enum, bridged like the clinical vocabularies.
#[derive(Clone, Copy)]
enum ViewChoice {
    Basic,
    Full,
}

impl Bridge for ViewChoice {
    type Proto = pb::EvaluationView;
    fn from_proto(p: pb::EvaluationView) -> Option<Self> {
        match p {
            pb::EvaluationView::Unspecified => None,
            pb::EvaluationView::Basic => Some(ViewChoice::Basic),
            pb::EvaluationView::Full => Some(ViewChoice::Full),
        }
    }
    fn to_proto(self) -> i32 {
        match self {
            ViewChoice::Basic => pb::EvaluationView::Basic as i32,
            ViewChoice::Full => pb::EvaluationView::Full as i32,
        }
    }
}

/// A new decision id: UUIDv7, so ids sort by time.
/// The id joins the call's span, so every later log line of the call carries it.
pub fn decision_id() -> String {
    let id = new_decision_id();
    join_span(&id);
    id
}

/// A new decision id that joins no span: for a screened patient, whose id joins the patient's
/// own span (a stream's span would gather one id per patient).
pub fn new_decision_id() -> String {
    // Written straight into a buffer: `to_string` goes through the formatter, once per patient.
    let mut buffer = uuid::Uuid::encode_buffer();
    uuid::Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut buffer)
        .to_owned()
}

/// One call as operators see it: its `call finished` line and its metrics, written when the
/// call ends, inside the call's span (method, trace id, caller, decision id), which
/// [`Call::start`] makes and the caller enters. A unary call ends when it answers; a
/// ScreenCohort stream when its last answer is sent. A call that is dropped before it ends
/// (its caller reset the stream, so hyper dropped the call) is logged and counted as
/// CANCELLED, so a caller's give-up is seen rather than lost from the logs and metrics.
/// `M` is how the call reaches the metrics: borrowed for a unary call, shared for a stream,
/// whose end comes on a task of its own.
pub struct Call<M: std::ops::Deref<Target = crate::metrics::Metrics>> {
    method: &'static str,
    started: std::time::Instant,
    pub trace_id: String,
    metrics: M,
    ended: bool,
}

impl<M: std::ops::Deref<Target = crate::metrics::Metrics>> Call<M> {
    /// The call and its span. The span is returned rather than kept, so that it can be moved
    /// into the future it instruments: a clone would cost a unary call about 1k instructions.
    pub fn start(
        method: &'static str,
        metadata: &tonic::metadata::MetadataMap,
        metrics: M,
    ) -> (Self, tracing::Span) {
        let started = std::time::Instant::now();
        let trace_id = crate::telemetry::trace_id(metadata);
        let span = tracing::info_span!(
            "call",
            // Method and decision id are bare tokens: written as they are, not quoted and escaped.
            method = %method,
            trace_id = %trace_id,
            caller = tracing::field::Empty,
            decision_id = tracing::field::Empty,
        );
        let call = Call {
            method,
            started,
            trace_id,
            metrics,
            ended: false,
        };
        (call, span)
    }

    /// Counts the call and writes its `call finished` (or refused, or failed) line in the
    /// current span, which is the call's; returns the trace id, for the answer's `x-trace-id`.
    pub fn finish(mut self, code: tonic::Code) -> String {
        self.end(code);
        std::mem::take(&mut self.trace_id)
    }

    fn end(&mut self, code: tonic::Code) {
        self.ended = true;
        let elapsed = self.started.elapsed();
        self.metrics.call(self.method, code, elapsed);
        crate::telemetry::call_finished(code, elapsed);
    }
}

impl<M: std::ops::Deref<Target = crate::metrics::Metrics>> Drop for Call<M> {
    fn drop(&mut self) {
        if !self.ended {
            self.end(tonic::Code::Cancelled);
        }
    }
}

/// Records the decision id in the call's span, as a bare token (not quoted and escaped).
fn join_span(decision_id: &str) {
    join(&tracing::Span::current(), decision_id);
}

/// Records the decision id in `span`, as a bare token (not quoted and escaped).
pub fn join(span: &tracing::Span, decision_id: &str) {
    span.record("decision_id", tracing::field::display(decision_id));
}

/// Page size when a list request leaves it at 0 (AIP-158).
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page a list request may ask for.
pub const MAX_PAGE_SIZE: i64 = 500;

/// Reads `page_size`: 0 means the default; 1 to the maximum are accepted.
pub fn page_size(r: &mut Reader, raw: i32) -> i64 {
    match i64::from(raw) {
        0 => DEFAULT_PAGE_SIZE,
        n if (1..=MAX_PAGE_SIZE).contains(&n) => n,
        n => {
            r.violation(
                "page_size",
                format!("must be between 0 and {MAX_PAGE_SIZE}, got {n}"),
            );
            DEFAULT_PAGE_SIZE
        }
    }
}

/// An opaque page token: the last item's position and a fingerprint of the filters it belongs to.
pub fn page_token(cursor: &crate::store::Cursor, filters: &str) -> String {
    let plain = format!(
        "v1\n{}\n{}\n{}",
        cursor.at_ms,
        cursor.id,
        filter_key(filters)
    );
    plain.bytes().map(|b| format!("{b:02x}")).collect()
}

fn filter_key(filters: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(filters.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Cuts rows fetched with `limit + 1` to one page and makes the token for the next one
/// (empty on the last page).
pub fn page<T>(
    mut rows: Vec<T>,
    limit: i64,
    filters: &str,
    position: impl Fn(&T) -> crate::store::Cursor,
) -> (Vec<T>, String) {
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let token = match rows.last() {
        Some(last) if more => page_token(&position(last), filters),
        _ => String::new(),
    };
    (rows, token)
}

/// Reads a page token made by [`page_token`] for the same filters.
pub fn read_page_token(r: &mut Reader, raw: &str, filters: &str) -> Option<crate::store::Cursor> {
    if raw.is_empty() {
        return None;
    }
    let parsed = raw
        .len()
        .is_multiple_of(2)
        .then(|| {
            (0..raw.len())
                .step_by(2)
                .map(|i| {
                    raw.get(i..i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                })
                .collect::<Option<Vec<u8>>>()
        })
        .flatten()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|plain| {
            let parts: Vec<&str> = plain.split('\n').collect();
            match parts.as_slice() {
                ["v1", at, id, key] if *key == filter_key(filters) => {
                    at.parse().ok().map(|at_ms| crate::store::Cursor {
                        at_ms,
                        id: id.to_string(),
                    })
                }
                _ => None,
            }
        });
    if parsed.is_none() {
        r.violation(
            "page_token",
            "is not a page token from this list with these filters",
        );
    }
    parsed
}
