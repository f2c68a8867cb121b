//! Recording decisions: every answer is written to the decision log before it is returned,
//! and a retried request_id returns the stored answer (AIP-155).

use std::future::{Future, Ready, ready};
use std::pin::Pin;

use futures_util::future::Either;
use tonic::Status;

use super::{AppState, Evaluation, read_evaluation};
use crate::errors::{Reason, error};
use crate::pb;
use crate::store::{NewDecision, Record, StoreError, StoredDecision, WriteOutcome};
use prost::Message;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn unavailable(e: StoreError) -> Status {
    tracing::error!(error = %e, "decision log unavailable");
    error(
        Reason::DecisionLogUnavailable,
        format!("the decision log is unavailable, so no decision was returned: {e}"),
    )
}

/// Keyed fingerprint of a request (identifiers already removed; the pseudonym stands in).
pub fn fingerprint(
    state: &AppState,
    kind: pb::DecisionKind,
    stored_request: &[u8],
    pseudonym: Option<&str>,
) -> String {
    let mut bytes = Vec::with_capacity(stored_request.len() + 80);
    bytes.extend_from_slice(&(kind as i32).to_be_bytes());
    bytes.extend_from_slice(pseudonym.unwrap_or("").as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(stored_request);
    state.pseudonymiser.fingerprint(&bytes)
}

/// A stored decision under the same request_id: the same request gets the stored record; a
/// different one is ALREADY_EXISTS.
pub fn same_request(
    existing: &StoredDecision,
    request_id: &str,
    kind: pb::DecisionKind,
    fingerprint: &str,
) -> Result<pb::DecisionRecord, Status> {
    if existing.kind != kind as i32 || existing.request_hash != fingerprint {
        return Err(error(
            Reason::RequestIdReused,
            format!(
                "request_id {request_id} was already used for a different request (decision {}); use a new request_id for a new request",
                existing.decision_id
            ),
        ));
    }
    pb::DecisionRecord::decode(existing.record.as_slice()).map_err(|e| {
        error(
            Reason::StoredRecordUnreadable,
            format!(
                "stored decision {} cannot be read: {e}",
                existing.decision_id
            ),
        )
    })
}

/// The stored answer for a retried request_id, if there is one.
pub async fn prior(
    state: &AppState,
    request_id: &str,
    kind: pb::DecisionKind,
    fingerprint: &str,
) -> Result<Option<pb::DecisionRecord>, Status> {
    if request_id.is_empty() {
        return Ok(None);
    }
    // Boxed: the store's future is large, and only requests that carry a request_id wait on it.
    match Box::pin(state.log.store().decision_by_request_id(request_id))
        .await
        .map_err(unavailable)?
    {
        Some(existing) => same_request(&existing, request_id, kind, fingerprint).map(Some),
        None => Ok(None),
    }
}

/// An answer a decision record holds: the request it answers, what the record and the log's
/// outcome index take from it, and its place in `DecisionRecord.response`.
pub trait RecordedAnswer: Message + Sized {
    /// What the answer is called in an error about a stored record.
    const NAME: &'static str;
    type Request: EvaluationRequest;
    fn decision_id(&self) -> &str;
    fn policy(&self) -> Option<&pb::PolicyReference>;
    fn as_of_date(&self) -> Option<crate::google::r#type::Date>;
    /// Each therapy's (therapy, eligibility status, funding route); 0 where it does not apply.
    fn outcomes(&self) -> Vec<(i32, i32, i32)>;
    /// The answer as a record's response.
    fn into_record(self) -> pb::decision_record::Response;
    /// The answer a record's response holds, if it is this kind of answer.
    fn out_of_record(response: pb::decision_record::Response) -> Option<Self>;

    /// The answer a stored record holds (a retry's, or a concurrent call's that won).
    fn from_record(record: pb::DecisionRecord) -> Result<Self, Status> {
        record
            .response
            .and_then(Self::out_of_record)
            .ok_or_else(|| {
                error(
                    Reason::StoredRecordUnreadable,
                    format!(
                        "stored decision {} has no {} answer",
                        record.decision_id,
                        Self::NAME
                    ),
                )
            })
    }
}

macro_rules! recorded_answer {
    ($response:ident, $request:ident, $variant:ident, |$t:ident| $outcome:expr) => {
        impl RecordedAnswer for pb::$response {
            const NAME: &'static str = stringify!($response);
            type Request = pb::$request;
            fn decision_id(&self) -> &str {
                &self.decision_id
            }
            fn policy(&self) -> Option<&pb::PolicyReference> {
                self.policy.as_ref()
            }
            fn as_of_date(&self) -> Option<crate::google::r#type::Date> {
                self.as_of_date
            }
            fn outcomes(&self) -> Vec<(i32, i32, i32)> {
                self.therapies.iter().map(|$t| $outcome).collect()
            }
            fn into_record(self) -> pb::decision_record::Response {
                pb::decision_record::Response::$variant(self)
            }
            fn out_of_record(response: pb::decision_record::Response) -> Option<Self> {
                match response {
                    pb::decision_record::Response::$variant(r) => Some(r),
                    _ => None,
                }
            }
        }
    };
}

recorded_answer!(
    EvaluateEligibilityResponse,
    EvaluateEligibilityRequest,
    EligibilityResponse,
    |t| (t.therapy, t.status, 0)
);
recorded_answer!(
    ClassifyFundingResponse,
    ClassifyFundingRequest,
    FundingResponse,
    |t| (t.therapy, 0, t.route)
);

/// A screened patient's one record. Both answers carry the record's decision id, policy and
/// as-of date; the eligibility answer's are read.
impl RecordedAnswer for pb::ScreeningResult {
    const NAME: &'static str = "screening";
    type Request = pb::ScreenCohortRequest;
    fn decision_id(&self) -> &str {
        self.eligibility.as_ref().map_or("", |e| &e.decision_id)
    }
    fn policy(&self) -> Option<&pb::PolicyReference> {
        self.eligibility.as_ref()?.policy.as_ref()
    }
    fn as_of_date(&self) -> Option<crate::google::r#type::Date> {
        self.eligibility.as_ref()?.as_of_date
    }
    /// Each therapy's status and route in one outcome, so a filter on both finds the patient.
    fn outcomes(&self) -> Vec<(i32, i32, i32)> {
        let eligibility = self.eligibility.as_ref().map_or(&[][..], |e| &e.therapies);
        let funding = self.funding.as_ref().map_or(&[][..], |f| &f.therapies);
        by_therapy(eligibility, |e| e.therapy, funding, |f| f.therapy)
            .into_iter()
            .map(|(therapy, e, f)| (therapy, e.map_or(0, |e| e.status), f.map_or(0, |f| f.route)))
            .collect()
    }
    fn into_record(self) -> pb::decision_record::Response {
        pb::decision_record::Response::ScreeningResult(self)
    }
    fn out_of_record(response: pb::decision_record::Response) -> Option<Self> {
        match response {
            pb::decision_record::Response::ScreeningResult(r) => Some(r),
            _ => None,
        }
    }
}

/// A screened patient's eligibility and funding items paired by therapy: eligibility's order,
/// then any therapy only funding names (never, today, as both answer the same request).
pub fn by_therapy<'a, E, F>(
    eligibility: &'a [E],
    therapy_of_e: fn(&E) -> i32,
    funding: &'a [F],
    therapy_of_f: fn(&F) -> i32,
) -> Vec<(i32, Option<&'a E>, Option<&'a F>)> {
    let mut pairs: Vec<(i32, Option<&E>, Option<&F>)> = eligibility
        .iter()
        .map(|e| {
            let therapy = therapy_of_e(e);
            (
                therapy,
                Some(e),
                funding.iter().find(|f| therapy_of_f(f) == therapy),
            )
        })
        .collect();
    for f in funding {
        if !pairs
            .iter()
            .any(|(therapy, _, _)| *therapy == therapy_of_f(f))
        {
            pairs.push((therapy_of_f(f), None, Some(f)));
        }
    }
    pairs
}

/// A validated request or a recorded answer: ready at once when the decision log is off, else
/// the log's lookup or write, boxed. So what the log's work holds (the record, the request, the
/// store's futures) is not part of the futures that await one: a unary call's future is moved
/// whole into its box, and a screened patient's into the stream's queue, on every call.
pub type Pending<'a, T> =
    Either<Ready<Result<T, Status>>, Pin<Box<dyn Future<Output = Result<T, Status>> + Send + 'a>>>;

/// Checks the deadline, then records an answer (unless the decision log is off) with the
/// registry observations it depended on. Returns the stored answer instead when a concurrent
/// call with the same request_id won the race.
pub fn record_answer<'a, M: RecordedAnswer + 'a>(
    state: &'a AppState,
    caller: &'a crate::auth::Caller,
    validated: Validated<M::Request>,
    response: M,
    registry_observations: Vec<pb::RegistryObservation>,
    deadline: Option<tokio::time::Instant>,
) -> Pending<'a, M> {
    if let Some(deadline) = deadline
        && let Err(late) = super::request::in_time(deadline)
    {
        return Either::Left(ready(Err(late)));
    }
    if !state.log.enabled() {
        return Either::Left(ready(Ok(response)));
    }
    Either::Right(Box::pin(write_answer(
        state,
        caller,
        validated,
        response,
        registry_observations,
    )))
}

/// Writes the answer's decision record; see [`record_answer`].
async fn write_answer<M: RecordedAnswer>(
    state: &AppState,
    caller: &crate::auth::Caller,
    validated: Validated<M::Request>,
    response: M,
    registry_observations: Vec<pb::RegistryObservation>,
) -> Result<M, Status> {
    let Validated {
        received_ms,
        evaluation: e,
        stored_request,
        fingerprint,
        prior: _,
    } = validated;
    let record = pb::DecisionRecord {
        decision_id: response.decision_id().to_string(),
        request_id: e.request_id,
        received_time: Some(timestamp(received_ms)),
        caller: caller.identity.clone(),
        policy: response.policy().cloned(),
        as_of_date: response.as_of_date(),
        kind: <M::Request as EvaluationRequest>::KIND as i32,
        patient_pseudonym: e.pseudonym.unwrap_or_default(),
        request: Some(stored_request.into_record_request()),
        response: None,
        registry_observations,
    };
    match persist(state, record, response, fingerprint).await? {
        Persisted::Written(response) => Ok(response),
        Persisted::AlreadyAnswered(winner) => M::from_record(*winner),
    }
}

/// What writing a decision came to.
pub enum Persisted<M> {
    /// The answer was recorded, and is the caller's to return.
    Written(M),
    /// A concurrent call with the same request_id was recorded first: its record.
    AlreadyAnswered(Box<pb::DecisionRecord>),
}

/// Writes the record, with `response` as its answer, durably; returns the stored record instead
/// when a concurrent call with the same request_id won the race. The answer is moved into the
/// record to be encoded and out again to be returned, so what is recorded is what the caller
/// receives, without a copy.
pub async fn persist<M: RecordedAnswer>(
    state: &AppState,
    mut record: pb::DecisionRecord,
    response: M,
    fingerprint: String,
) -> Result<Persisted<M>, Status> {
    let policy = record.policy.clone().unwrap_or_default();
    let as_of = record
        .as_of_date
        .map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day))
        .unwrap_or_default();
    let outcomes = response.outcomes();
    record.response = Some(response.into_record());
    let bytes = record.encode_to_vec();
    let Some(response) = record.response.take().and_then(M::out_of_record) else {
        return Err(error(
            Reason::Internal,
            "the answer was lost from its own record",
        ));
    };
    let new = NewDecision {
        decision_id: record.decision_id.clone(),
        request_id: (!record.request_id.is_empty()).then(|| record.request_id.clone()),
        request_hash: fingerprint.clone(),
        kind: record.kind,
        received_at_ms: record
            .received_time
            .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000)),
        caller: record.caller.clone(),
        policy_version: policy.version,
        policy_hash: policy.content_hash,
        as_of,
        patient_pseudonym: (!record.patient_pseudonym.is_empty())
            .then(|| record.patient_pseudonym.clone()),
        // Compressed here, on the caller's task, so the single writer only writes.
        record: Record::compressed(bytes),
        outcomes,
    };
    let started = std::time::Instant::now();
    let written = state.log.record(new).await.map_err(unavailable)?;
    state.metrics.log_write(started.elapsed());
    match written {
        WriteOutcome::Written => Ok(Persisted::Written(response)),
        WriteOutcome::RequestIdTaken(existing) => {
            let kind =
                pb::DecisionKind::try_from(record.kind).unwrap_or(pb::DecisionKind::Unspecified);
            same_request(&existing, &record.request_id, kind, &fingerprint)
                .map(|winner| Persisted::AlreadyAnswered(Box::new(winner)))
        }
    }
}

/// The two evaluation requests share their fields; this lets one path validate, store and
/// replay both.
pub trait EvaluationRequest: Message + Clone + Sized {
    const KIND: pb::DecisionKind;
    fn parts(
        &self,
    ) -> (
        &str,
        Option<&pb::PatientProfile>,
        &[i32],
        Option<&crate::google::r#type::Date>,
        i32,
        i32,
    );
    fn patient_mut(&mut self) -> Option<&mut pb::PatientProfile>;
    /// As a decision record holds it.
    fn into_record_request(self) -> pb::decision_record::Request;

    /// Validates the request against its own as-of date, or `as_of` when given (replay).
    fn evaluation(
        &self,
        state: &AppState,
        as_of: Option<&crate::google::r#type::Date>,
    ) -> Result<Evaluation, Status> {
        let (request_id, patient, therapies, own_as_of, view, citations) = self.parts();
        read_evaluation(
            &state.pseudonymiser,
            request_id,
            patient,
            therapies,
            as_of.or(own_as_of),
            view,
            citations,
        )
    }
}

macro_rules! evaluation_request {
    ($request:ident, $kind:ident, $variant:ident, |$r:ident| $request_id:expr) => {
        impl EvaluationRequest for pb::$request {
            const KIND: pb::DecisionKind = pb::DecisionKind::$kind;
            fn parts(
                &self,
            ) -> (
                &str,
                Option<&pb::PatientProfile>,
                &[i32],
                Option<&crate::google::r#type::Date>,
                i32,
                i32,
            ) {
                let $r = self;
                (
                    $request_id,
                    self.patient.as_deref(),
                    &self.therapies,
                    self.as_of_date.as_ref(),
                    self.view,
                    self.citations,
                )
            }
            fn patient_mut(&mut self) -> Option<&mut pb::PatientProfile> {
                self.patient.as_deref_mut()
            }
            fn into_record_request(self) -> pb::decision_record::Request {
                pb::decision_record::Request::$variant(self)
            }
        }
    };
}

evaluation_request!(
    EvaluateEligibilityRequest,
    Eligibility,
    EligibilityRequest,
    |r| &r.request_id
);
evaluation_request!(ClassifyFundingRequest, Funding, FundingRequest, |r| &r
    .request_id);
// A screened patient has no request_id (stream patients are not retried by id); the caller of
// `validate` clears its correlation_id, so that is not stored either.
evaluation_request!(ScreenCohortRequest, Screening, ScreeningRequest, |_r| "");

/// An admitted call (the gate admitted it): who is asking and its deadline.
pub struct Admitted {
    /// Who is asking; recorded with the decision.
    pub caller: crate::auth::Caller,
    /// When the call must be answered by; checked again before the decision is recorded.
    pub deadline: tokio::time::Instant,
}

/// The caller the gate admitted, and the call's deadline; refuses the call if its deadline
/// has already passed.
pub fn admit<T>(state: &AppState, request: &tonic::Request<T>) -> Result<Admitted, Status> {
    let caller = state.caller(request)?;
    let deadline = super::request::deadline(request, &state.limits);
    super::request::in_time(deadline)?;
    Ok(Admitted { caller, deadline })
}

/// A place among the FULL-view answers being decided, recorded or sent, for a call asking for
/// the FULL view or leaving it unset (`--max-full-answers`), waited for within the call's
/// deadline; none is needed for BASIC. Refused at once with RetryInfo when as many FULL calls
/// already wait as may (`crate::admission::WAITING_PER_PLACE` per place).
pub async fn full_answer_place(
    state: &AppState,
    view: i32,
    deadline: tokio::time::Instant,
) -> Result<Option<crate::admission::FullAnswerPlace>, Status> {
    use crate::admission::NoFullPlace;
    if !super::request::asks_full(view) {
        return Ok(None);
    }
    // Gives up a tenth of the time left before the deadline (at most 100 ms), so the caller
    // hears why rather than the transport's bare "Timeout expired" at the deadline itself.
    let now = tokio::time::Instant::now();
    let margin =
        (deadline.saturating_duration_since(now) / 10).min(std::time::Duration::from_millis(100));
    let places = state.full_answers.max();
    match state.full_answers.place(deadline - margin).await {
        Ok(place) => Ok(Some(place)),
        Err(NoFullPlace::QueueFull) => Err(state.overloaded(format!(
            "overloaded: the {places} places for FULL answers being decided or sent are held and {} more FULL calls wait; nothing was recorded; retry later, or ask for the BASIC view, which does not wait",
            places * crate::admission::WAITING_PER_PLACE
        ))),
        Err(NoFullPlace::Closed) => Err(error(
            Reason::ShuttingDown,
            "the server is not deciding FULL answers; nothing was recorded",
        )),
        Err(NoFullPlace::TimedOut) => Err(error(
            Reason::DeadlinePassed,
            format!(
                "the call's deadline passed while it waited for one of the {places} places for FULL answers being decided or sent; nothing was recorded; BASIC answers do not wait"
            ),
        )),
    }
}

/// The answer, carrying its FULL place (if any) in its extensions to the gate, which holds it
/// with the answer's body until the answer is sent (`crate::gate`).
pub fn held_until_sent<T>(
    mut answer: tonic::Response<T>,
    place: Option<crate::admission::FullAnswerPlace>,
) -> tonic::Response<T> {
    if let Some(place) = place {
        answer
            .extensions_mut()
            .insert(crate::admission::HeldUntilSent::new(place));
    }
    answer
}

/// A validated request ready to decide: what will be stored, its fingerprint, and the stored
/// answer if this is a retry.
pub struct Validated<R> {
    pub received_ms: i64,
    pub evaluation: Evaluation,
    /// The request without its identifiers (the pseudonym stands in). Boxed, like `prior`, so
    /// the futures that carry a validated request stay small.
    pub stored_request: Box<R>,
    /// Empty when the decision log is off or the request has no request_id.
    pub fingerprint: String,
    pub prior: Option<Box<pb::DecisionRecord>>,
}

/// Validates the request and looks up a stored answer for a retried request_id.
pub fn validate<'a, R: EvaluationRequest + 'a>(
    state: &'a AppState,
    request: Box<R>,
) -> Pending<'a, Validated<R>> {
    let received_ms = now_ms();
    let evaluation = match request.evaluation(state, None) {
        Ok(evaluation) => evaluation,
        Err(invalid) => return Either::Left(ready(Err(invalid))),
    };
    let (stored_request, fingerprint) = stored(state, request, evaluation.pseudonym.as_deref());
    let validated = Validated {
        received_ms,
        evaluation,
        stored_request,
        fingerprint,
        prior: None,
    };
    if !state.log.enabled() {
        return Either::Left(ready(Ok(validated)));
    }
    Either::Right(Box::pin(with_prior(state, validated)))
}

/// The validated request with the stored answer for its request_id, if this is a retry.
async fn with_prior<R: EvaluationRequest>(
    state: &AppState,
    mut validated: Validated<R>,
) -> Result<Validated<R>, Status> {
    let e = &validated.evaluation;
    validated.prior = prior(state, &e.request_id, R::KIND, &validated.fingerprint)
        .await?
        .map(Box::new);
    if let Some(record) = &validated.prior {
        super::request::join_span(&record.decision_id);
    }
    Ok(validated)
}

/// The request as it will be stored (identifiers removed; the pseudonym stands in) and its
/// fingerprint. Only a retry of a request_id is matched by fingerprint, so a request without
/// one (every screened patient) is stored with none, and none is made when the log is off.
fn stored<R: EvaluationRequest>(
    state: &AppState,
    mut stored_request: Box<R>,
    pseudonym: Option<&str>,
) -> (Box<R>, String) {
    if let Some(p) = stored_request.patient_mut() {
        p.identifiers = None;
    }
    let fingerprint = if state.log.enabled() && !stored_request.parts().0.is_empty() {
        fingerprint(state, R::KIND, &stored_request.encode_to_vec(), pseudonym)
    } else {
        String::new()
    };
    (stored_request, fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer as `persist` records it, read back from the record's bytes.
    fn recorded<M: RecordedAnswer + Clone>(response: &M) -> Option<M> {
        let bytes = pb::DecisionRecord {
            decision_id: "d1".into(),
            response: Some(response.clone().into_record()),
            ..Default::default()
        }
        .encode_to_vec();
        M::from_record(pb::DecisionRecord::decode(bytes.as_slice()).ok()?).ok()
    }

    /// A screened patient's outcomes pair each therapy's status with its route; a therapy only
    /// the funding answer names keeps its route with no status.
    #[test]
    fn a_screening_records_outcomes_pair_status_and_route_by_therapy() {
        let eligible = |therapy: i32| pb::TherapyEligibility {
            therapy,
            status: pb::EligibilityStatus::Eligible as i32,
            ..Default::default()
        };
        let funded = |therapy: i32, route: pb::FundingRoute| pb::TherapyFunding {
            therapy,
            route: route as i32,
            ..Default::default()
        };
        let screened = pb::ScreeningResult {
            eligibility: Some(pb::EvaluateEligibilityResponse {
                therapies: vec![eligible(3), eligible(1)],
                ..Default::default()
            }),
            funding: Some(pb::ClassifyFundingResponse {
                therapies: vec![
                    funded(1, pb::FundingRoute::RoutinelyCommissioned),
                    funded(3, pb::FundingRoute::RoutinelyCommissionedNiceTa),
                    funded(4, pb::FundingRoute::AuditRegistryClosed),
                ],
                ..Default::default()
            }),
        };
        assert_eq!(screened.outcomes(), [(3, 1, 1), (1, 1, 3), (4, 0, 5)]);
    }

    /// Each kind of answer reads back from its record as itself, and a record holding another
    /// kind of answer is not mistaken for it.
    #[test]
    fn each_answer_reads_back_from_its_record_and_no_other() {
        let eligibility = pb::EvaluateEligibilityResponse {
            decision_id: "d1".into(),
            ..Default::default()
        };
        assert_eq!(recorded(&eligibility), Some(eligibility.clone()));
        let funding = pb::ClassifyFundingResponse {
            decision_id: "d1".into(),
            ..Default::default()
        };
        assert_eq!(recorded(&funding), Some(funding.clone()));
        let screened = pb::ScreeningResult {
            eligibility: Some(eligibility.clone()),
            funding: None,
        };
        assert_eq!(recorded(&screened), Some(screened));
        let record = pb::DecisionRecord {
            decision_id: "d1".into(),
            response: Some(eligibility.into_record()),
            ..Default::default()
        };
        let refused = pb::ClassifyFundingResponse::from_record(record).expect_err("not funding");
        assert_eq!(refused.code(), tonic::Code::Internal);
        assert!(
            refused.message().contains("ClassifyFundingResponse"),
            "{refused:?}"
        );
    }
}
