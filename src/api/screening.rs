//! ScreeningService: eligibility and funding for a stream of patients. Each patient is decided
//! as the unary RPCs would decide, and recorded as one decision holding both answers; errors
//! stay with their patient.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, Stream, StreamExt};
use prost::Message;
use tokio::sync::{Notify, mpsc};
use tonic::{Request, Response, Status, Streaming};

use super::request::{asks_full, join, new_decision_id};
use super::{AppState, eligibility, funding, record};
use crate::auth::Caller;
use crate::domain::Violation;
use crate::errors::{self, Reason};
use crate::pb;
use crate::pb::screening_service_server::ScreeningService;

/// Answers handed to tonic but not yet taken for sending, per stream, as messages: enough that
/// tonic encodes several answers into one HTTP/2 frame, few enough that a stream holding them
/// for a caller who stopped reading costs little (a BASIC answer is about 12 KB as a message).
const ANSWERS_BUFFERED: usize = 8;
/// No answer asked for yet.
const NOT_ASKED: u64 = u64::MAX;
/// Longest correlation id accepted.
const MAX_CORRELATION_ID: usize = 128;

pub struct ScreeningApi {
    state: AppState,
}

impl ScreeningApi {
    pub fn new(state: AppState) -> Self {
        ScreeningApi { state }
    }
}

type Answer = Result<pb::ScreenCohortResponse, Status>;

/// A stream's answers as tonic takes them to send. Hyper polls an answer body for its next
/// frame once the last one is handed to HTTP/2, and then waits for the stream's window before
/// polling again, so an ask that finds no answer waiting is the caller's demand: the screening
/// task starts patients only within a few answers of one (`answers_ahead`). A caller who stops
/// reading therefore has at most one frame's worth of answers, and those few, decided beyond its
/// window (up to `--screening-window` patients), and up to `ANSWERS_BUFFERED` of them wait here
/// as messages.
pub struct Answers {
    answers: mpsc::Receiver<Answer>,
    /// Answers tonic has taken.
    taken: u64,
    demand: Arc<Demand>,
}

/// What the screening task reads of the caller's demand.
struct Demand {
    /// How many answers tonic had taken when it last asked for one and found none.
    asked_after: AtomicU64,
    asked: Notify,
}

impl Demand {
    /// Tonic has asked for an answer, and fewer than `ahead` answers have been sent (`sent`)
    /// since: the stream runs that far ahead of tonic, so tonic takes small answers in batches
    /// rather than waking the stream for each patient.
    fn wants_more(&self, sent: u64, ahead: usize) -> bool {
        let asked_after = self.asked_after.load(Ordering::Acquire);
        asked_after != NOT_ASKED && sent.saturating_sub(asked_after) < ahead as u64
    }
}

/// Answers a stream may send ahead of tonic's last ask, by the size of the waiting patient's
/// answer: up to `ANSWERS_BUFFERED` small ones within `AHEAD_BYTES`, and always one.
fn answers_ahead(answer_bytes: usize) -> usize {
    (AHEAD_BYTES / answer_bytes.max(1)).clamp(1, ANSWERS_BUFFERED)
}

/// Expected answer bytes a stream may send ahead of tonic's last ask: eight BASIC answers for
/// every therapy (about 2 KB each expected), and a single FULL one (about 220 KB).
const AHEAD_BYTES: usize = 32 * 1024;

impl Stream for Answers {
    type Item = Answer;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Answer>> {
        let next = self.answers.poll_recv(cx);
        match next {
            Poll::Ready(Some(_)) => self.taken += 1,
            Poll::Pending => {
                self.demand.asked_after.store(self.taken, Ordering::Release);
                self.demand.asked.notify_one();
            }
            Poll::Ready(None) => {}
        }
        next
    }
}

#[tonic::async_trait]
impl ScreeningService for ScreeningApi {
    type ScreenCohortStream = Answers;

    async fn screen_cohort(
        &self,
        request: Request<Streaming<pb::ScreenCohortRequest>>,
    ) -> Result<Response<Answers>, Status> {
        let (answers, stream) = self.open(request)?;
        // The stream's work keeps the call's span (`crate::gate`), also if the task is dropped at
        // shutdown.
        tokio::spawn(tracing::Instrument::in_current_span(stream));
        Ok(Response::new(answers))
    }
}

impl ScreeningApi {
    /// The stream's answers and the work that screens it. The gate admitted the stream as one
    /// call in progress, until its answers end.
    fn open(
        &self,
        request: Request<Streaming<pb::ScreenCohortRequest>>,
    ) -> Result<(Answers, impl Future<Output = ()> + Send + 'static), Status> {
        let caller = self.state.caller(&request)?;
        let (answers, rx) = mpsc::channel(ANSWERS_BUFFERED);
        let demand = Arc::new(Demand {
            asked_after: AtomicU64::new(NOT_ASKED),
            asked: Notify::new(),
        });
        let stream = screen(
            self.state.clone(),
            caller,
            request.into_inner(),
            answers,
            Arc::clone(&demand),
        );
        let answers = Answers {
            answers: rx,
            taken: 0,
            demand,
        };
        Ok((answers, stream))
    }
}

/// Reads patients while the stream has room, starts each once the caller has asked for an
/// answer and the server has a screening place for it, sends each answer as it is ready, and
/// stops at the caller's end of stream, the per-stream limit, shutdown, or a caller who went
/// away. A patient holds its place until its answer is recorded, never while its answer waits
/// for the caller to read it: a stream whose caller stops reading holds the answers already in
/// progress, within its budget, and no place.
async fn screen(
    state: AppState,
    caller: Caller,
    mut patients: Streaming<pb::ScreenCohortRequest>,
    answers: mpsc::Sender<Answer>,
    demand: Arc<Demand>,
) {
    let limit = state.limits.max_patients_per_stream;
    let window = state.limits.screening_window.max(1);
    let mut stopping = state.stopping.subscribe();
    let mut deciding = FuturesUnordered::new();
    // The patient read and waiting for room and a place, with its turn in the semaphore's
    // queue kept across turns of the loop, so the stream does not lose its turn to others.
    let mut waiting: Option<Waiting> = None;
    // Answers the caller has not taken yet, beyond the one the channel holds, in their wire
    // form: a BASIC answer is about 0.6 KB encoded and 12 KB as a message, so a stream whose
    // caller stops reading holds its window of answers at a twentieth of the memory.
    let mut unsent: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
    // Bytes the stream's answers may take: those being decided (as expected) and those not yet
    // taken (as encoded).
    let mut committed = 0usize;
    let (shared, who) = (&state, &caller);
    let (mut received, mut screened, mut refused) = (0u64, 0u64, 0u64);
    // Answers handed to tonic.
    let mut sent = 0u64;
    let mut reading = true;
    let mut ending: Option<Status> = None;
    loop {
        let in_progress = deciding.len() + unsent.len();
        // The waiting patient may start when tonic has asked for an answer and the stream is not
        // too far ahead of it (a caller who stops reading stops the deciding), and the stream's
        // answers leave it room (one patient may always be in progress).
        let may_start = waiting.as_ref().is_some_and(|w| {
            demand.wants_more(sent, answers_ahead(w.answer_bytes))
                && (in_progress == 0
                    || (in_progress < window && committed + w.answer_bytes <= STREAM_ANSWER_BYTES))
        });
        // A patient queues for a place only while it may start: a stream whose caller stopped
        // reading leaves the queue, so no place is given to it while it cannot use one.
        if let Some(w) = waiting.as_mut() {
            if !may_start {
                w.turn = None;
            } else if w.turn.is_none() {
                let places = places_for(w.answer_bytes, &state.limits);
                w.turn = Some(Box::pin(
                    std::sync::Arc::clone(&state.screening_places).acquire_many_owned(places),
                ));
            }
        }
        let busy = reading || waiting.is_some() || !deciding.is_empty() || !unsent.is_empty();
        tokio::select! {
            biased;
            Ok(()) = stopping.wait_for(|stop| *stop).map(|r| r.map(|_| ())), if reading => {
                reading = false;
                ending = Some(errors::error(
                    Reason::ShuttingDown,
                    "the server is shutting down: this stream takes no more patients; every answer sent is recorded; send the patients not answered on a new stream",
                ));
                // The patient read but not started is not decided: the caller sends it again.
                waiting = None;
            }
            // The caller went away (its answers were dropped): whatever the stream was waiting
            // for will never come. Armed only while there is work, so the loop still ends when
            // the rest is done.
            () = answers.closed(), if busy => return caller_gone(received),
            // Room in the channel: the next unsent answer goes.
            permit = answers.reserve(), if !unsent.is_empty() => {
                match (permit, unsent.pop_front()) {
                    (Ok(permit), Some(encoded)) => {
                        committed = committed.saturating_sub(encoded.len());
                        // The answer was encoded by this stream a moment ago; were it not to
                        // decode, the stream ends rather than send a different answer.
                        match pb::ScreenCohortResponse::decode(encoded.as_slice()) {
                            Ok(answer) => permit.send(Ok(answer)),
                            Err(error) => {
                                tracing::error!(%error, "a held screening answer did not decode");
                                permit.send(Err(errors::error(
                                    Reason::Internal,
                                    "an answer held for this stream could not be sent; the patients not answered can be sent again on a new stream",
                                )));
                                return;
                            }
                        }
                        sent += 1;
                    }
                    (Ok(_), None) => {}
                    (Err(_), _) => return caller_gone(received),
                }
            }
            // Tonic asked for an answer: the loop looks again at whether a patient may start.
            () = demand.asked.notified(), if waiting.is_some() && !may_start => {}
            Some((answer, answer_bytes)) = deciding.next(), if !deciding.is_empty() => {
                let answer: pb::ScreenCohortResponse = answer;
                committed = committed.saturating_sub(answer_bytes);
                if matches!(answer.result, Some(pb::screen_cohort_response::Result::Error(_))) {
                    refused += 1;
                } else {
                    screened += 1;
                }
                let held = if unsent.is_empty() {
                    match answers.try_send(Ok(answer)) {
                        Ok(()) => {
                            sent += 1;
                            None
                        }
                        Err(mpsc::error::TrySendError::Full(Ok(answer))) => Some(answer),
                        Err(_) => return caller_gone(received),
                    }
                } else {
                    Some(answer)
                };
                if let Some(answer) = held {
                    let encoded = answer.encode_to_vec();
                    committed += encoded.len();
                    unsent.push_back(encoded);
                }
            }
            Some(taken) = futures_util::future::OptionFuture::from(
                waiting.as_mut().and_then(|w| w.turn.as_mut())
            ), if may_start =>
            {
                // The semaphore is never closed; were it, the patient is dropped unanswered
                // and the stream stops reading, rather than deciding without a place.
                match (taken, waiting.take()) {
                    // Boxed: the patient's future is several kilobytes, and the queue of
                    // patients being decided would otherwise copy it on every push.
                    (Ok(place), Some(w)) => {
                        let place = Place::taken(place, &state.screening_patients);
                        committed += w.answer_bytes;
                        let answer_bytes = w.answer_bytes;
                        deciding.push(Box::pin(
                            screen_one(shared, who, w.request, place).map(move |a| (a, answer_bytes)),
                        ));
                    }
                    _ => reading = false,
                }
            }
            next = patients.message(), if reading && waiting.is_none() => match next {
                Ok(Some(request)) if received < limit => {
                    received += 1;
                    let answer_bytes = expected_answer_bytes(&request);
                    // Boxed on arrival, in the box validation keeps as the stored request,
                    // so the patient's 0.8 KB request is not copied on its way there.
                    waiting = Some(Waiting {
                        request: Box::new(request),
                        turn: None,
                        answer_bytes,
                    });
                }
                Ok(Some(_)) => {
                    reading = false;
                    ending = Some(errors::error(
                        Reason::StreamLimitReached,
                        format!(
                            "this stream reached the limit of {limit} patients; the first {limit} were answered; send the rest on a new stream"
                        ),
                    ));
                }
                Ok(None) => reading = false,
                Err(status) => {
                    reading = false;
                    tracing::warn!(code = ?status.code(), "screening stream broken by the caller");
                    // The caller learns why its stream stopped being read (a message that does
                    // not parse is INVALID_ARGUMENT, as in a unary call) once the patients
                    // before it are answered; a caller who has gone will not read it.
                    ending = Some(status);
                }
            },
            else => break,
        }
    }
    tracing::info!(received, screened, refused, "screening stream finished");
    if let Some(status) = ending
        && answers.send(Err(status)).await.is_err()
    {
        caller_gone(received);
    }
}

/// The stream's end when its caller has gone: nobody reads its answers any more.
fn caller_gone(received: u64) {
    tracing::warn!(received, "screening caller went away; stopping");
}

/// A patient read from the stream, waiting for room in the stream and a screening place: its
/// turn in the places' queue, while it has room.
struct Waiting {
    request: Box<pb::ScreenCohortRequest>,
    turn: Option<std::pin::Pin<Box<AcquirePlace>>>,
    answer_bytes: usize,
}

type AcquirePlace = dyn Future<Output = Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError>>
    + Send;

/// A patient's screening places, given back (and the patient no longer counted in progress)
/// when dropped.
struct Place {
    _places: tokio::sync::OwnedSemaphorePermit,
    patients: Arc<std::sync::atomic::AtomicUsize>,
}

impl Place {
    fn taken(
        places: tokio::sync::OwnedSemaphorePermit,
        patients: &Arc<std::sync::atomic::AtomicUsize>,
    ) -> Self {
        patients.fetch_add(1, Ordering::Relaxed);
        Place {
            _places: places,
            patients: Arc::clone(patients),
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.patients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Screening places a patient takes: one for a BASIC answer, and one per therapy a FULL answer
/// explains, so that the FULL answers being built at once (each some hundreds of KB as a
/// message) stay few; never more than there are.
fn places_for(answer_bytes: usize, limits: &crate::config::Limits) -> u32 {
    let places = answer_bytes.div_ceil(FULL_PER_THERAPY).max(1);
    u32::try_from(places.min(super::state::screening_capacity(limits))).unwrap_or(1)
}

/// Bytes a stream's answers may take while they are decided or wait for the caller to read
/// them: about two FULL answers, or a window of BASIC ones.
const STREAM_ANSWER_BYTES: usize = 256 * 1024;

/// What a FULL answer is expected to take per therapy it explains.
const FULL_PER_THERAPY: usize = 16 * 1024;

/// What a patient's answer is expected to take: a FULL answer explains every criterion of
/// every therapy twice (eligibility and funding, about 200 KB for all 14 therapies with policy
/// 2026.12.1); a BASIC one is a status and a route per therapy.
fn expected_answer_bytes(request: &pb::ScreenCohortRequest) -> usize {
    const BASIC_PER_THERAPY: usize = 128;
    let all = crate::domain::Therapy::ALL.len();
    let therapies = match request.therapies.len() {
        0 => all,
        n => n.min(all),
    };
    therapies
        * if !asks_full(request.view) {
            BASIC_PER_THERAPY
        } else {
            FULL_PER_THERAPY
        }
}

/// One patient: validated once, eligibility and funding decided from one set of facts, and
/// both answers recorded as one decision. The patient's screening place is given back once its
/// answer is recorded.
async fn screen_one(
    state: &AppState,
    caller: &Caller,
    mut request: Box<pb::ScreenCohortRequest>,
    place: Place,
) -> pb::ScreenCohortResponse {
    // Debug level: no info line is written per patient, so at info the span only cost time
    // (4.4 % of a screened patient's instructions). A line from inside one patient (the
    // decision log failing) still carries the stream's method, trace id and caller, and the
    // patient's decision id too at RUST_LOG=debug.
    let span = tracing::debug_span!("patient", decision_id = tracing::field::Empty);
    let patient_span = span.clone();
    // The caller's label for the patient is echoed, not stored.
    let correlation_id = std::mem::take(&mut request.correlation_id);
    let result = tracing::Instrument::instrument(
        async {
            let validated = record::validate(state, request).await;
            let validated = match (validated, correlation_problem(&correlation_id)) {
                (Ok(v), None) => v,
                (Err(status), None) => return Err(status),
                (result, Some(problem)) => {
                    return Err(with_correlation_problem(problem, result.err().as_ref()));
                }
            };
            let policy = state.policy.current();
            let registries = funding::Registries::consult(
                state,
                &policy,
                validated.evaluation.pseudonym.as_deref(),
            )
            .await?;
            // One set of facts for both answers: eligibility and funding share most criteria,
            // and eligibility never reads the registry enrolments funding needs.
            let (eligibility, funding) = {
                let e = &validated.evaluation;
                let mut facts = policy.facts(&e.patient, e.as_of, e.detail());
                facts.registry_enrolments = registries.enrolled;
                let id = new_decision_id();
                join(&patient_span, &id);
                (
                    eligibility::answer(&policy, &facts, e, id.clone()),
                    funding::answer(&policy, &facts, e, id),
                )
            };
            eligibility::count(state, &eligibility);
            funding::count(state, &funding);
            let screened = pb::ScreeningResult {
                eligibility: Some(eligibility),
                funding: Some(funding),
            };
            record::record_answer(
                state,
                caller,
                validated,
                screened,
                registries.observations,
                None,
            )
            .await
        },
        span,
    )
    .await;
    drop(place);
    pb::ScreenCohortResponse {
        correlation_id,
        result: Some(match result {
            Ok(screened) => pb::screen_cohort_response::Result::Screened(screened),
            Err(status) => pb::screen_cohort_response::Result::Error(rpc_status(&status)),
        }),
    }
}

fn correlation_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        Some("is required: the caller's id for this patient in the stream".into())
    } else if id.chars().count() > MAX_CORRELATION_ID || id.chars().any(char::is_control) {
        Some(format!(
            "must be at most {MAX_CORRELATION_ID} printable characters"
        ))
    } else {
        None
    }
}

/// INVALID_ARGUMENT naming the correlation id's problem, then any from validating the rest of
/// the request, so the caller sees every problem at once.
fn with_correlation_problem(problem: String, status: Option<&Status>) -> Status {
    use tonic_types::StatusExt;
    let mut violations = vec![Violation {
        field: "correlation_id".into(),
        description: problem,
    }];
    if let Some(bad) = status.and_then(|s| s.get_error_details().bad_request().cloned()) {
        violations.extend(bad.field_violations.iter().map(|v| Violation {
            field: v.field.clone(),
            description: v.description.clone(),
        }));
    }
    super::invalid_argument(&violations)
}

/// The status as google.rpc.Status, with its details (BadRequest, RetryInfo) intact.
fn rpc_status(status: &Status) -> tonic_types::pb::Status {
    if !status.details().is_empty()
        && let Ok(decoded) = tonic_types::pb::Status::decode(status.details())
    {
        return decoded;
    }
    tonic_types::pb::Status {
        code: status.code() as i32,
        message: status.message().to_string(),
        details: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient(view: pb::EvaluationView, therapies: usize) -> pb::ScreenCohortRequest {
        pb::ScreenCohortRequest {
            view: view as i32,
            therapies: vec![pb::Therapy::PrrtLu177Dotatate as i32; therapies],
            ..Default::default()
        }
    }

    #[test]
    fn a_full_patient_takes_a_place_per_therapy_it_explains() {
        let limits = crate::config::Limits::default();
        let places =
            |request: &pb::ScreenCohortRequest| places_for(expected_answer_bytes(request), &limits);
        assert_eq!(places(&patient(pb::EvaluationView::Basic, 0)), 1);
        assert_eq!(places(&patient(pb::EvaluationView::Full, 1)), 1);
        let every = u32::try_from(crate::domain::Therapy::ALL.len()).expect("therapies");
        assert_eq!(places(&patient(pb::EvaluationView::Full, 0)), every);
    }

    #[test]
    fn a_patient_never_needs_more_places_than_there_are() {
        let limits = crate::config::Limits {
            max_screening_patients: 4,
            ..Default::default()
        };
        let full = patient(pb::EvaluationView::Full, 0);
        assert_eq!(places_for(expected_answer_bytes(&full), &limits), 4);
    }

    #[test]
    fn small_answers_run_ahead_of_tonic_and_full_ones_do_not() {
        assert_eq!(
            answers_ahead(expected_answer_bytes(&patient(
                pb::EvaluationView::Basic,
                0
            ))),
            ANSWERS_BUFFERED
        );
        assert_eq!(
            answers_ahead(expected_answer_bytes(&patient(pb::EvaluationView::Full, 0))),
            1
        );
    }
}
