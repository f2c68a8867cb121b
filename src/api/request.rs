//! Reading what every RPC shares: its deadline, the patient's identifiers, the evaluation
//! request (patient, therapies, date, view), and the decision id an answer is given under.

use chrono::NaiveDate;
use tonic::Status;
use tonic::codegen::http::HeaderName;

use super::convert::{Bridge, Reader};
use crate::config::Limits;
use crate::domain::{Patient, Therapy};
use crate::errors::invalid_argument;
use crate::google::r#type::Date as ProtoDate;
use crate::pb;
use crate::store::pseudonym::{Pseudonymiser, valid_nhs_number};

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
        Err(crate::errors::error(
            crate::errors::Reason::DeadlinePassed,
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
    /// Whether a FULL answer gives each item its full citation (CITATION_STYLE_INLINE,
    /// deprecated) rather than citing each source once (SHARED).
    pub inline_citations: bool,
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
    citations: i32,
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
    if pb::CitationStyle::try_from(citations).is_err() {
        r.violation(
            "citations",
            format!("{citations} is not a CitationStyle (0 to 2)"),
        );
    }
    let inline_citations = super::citations::asks_inline(citations);
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
        inline_citations,
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

/// Records the decision id in the call's span, as a bare token (not quoted and escaped).
pub(super) fn join_span(decision_id: &str) {
    join(&tracing::Span::current(), decision_id);
}

/// Records the decision id in `span`, as a bare token (not quoted and escaped).
pub fn join(span: &tracing::Span, decision_id: &str) {
    span.record("decision_id", tracing::field::display(decision_id));
}
