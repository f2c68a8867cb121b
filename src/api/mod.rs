//! gRPC adapters: decode and validate the request, call the engine, encode the answer.
//! `tonic::Status` is built only here; no clinical logic lives here.

pub mod convert;
mod eligibility;
mod errors;
mod funding;
mod policy;

use std::sync::{Arc, RwLock};

use chrono::NaiveDate;
use tonic::Status;

use crate::domain::{Patient, Therapy};
use crate::engine::Policy;
use crate::google::r#type::Date as ProtoDate;
use crate::pb;
use convert::{Bridge, Reader};

pub use eligibility::EligibilityApi;
pub use errors::invalid_argument;
pub use funding::FundingApi;
pub use policy::PolicyApi;

/// The active policy, shared by every service. Readers take a cheap `Arc` snapshot, so a call
/// finishes on the policy it started with.
#[derive(Clone)]
pub struct ActivePolicy(Arc<RwLock<Arc<Policy>>>);

impl ActivePolicy {
    pub fn new(policy: Policy) -> Self {
        ActivePolicy(Arc::new(RwLock::new(Arc::new(policy))))
    }

    pub fn current(&self) -> Arc<Policy> {
        match self.0.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn replace(&self, policy: Policy) {
        let next = Arc::new(policy);
        match self.0.write() {
            Ok(mut guard) => *guard = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
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
pub struct Evaluation {
    pub request_id: String,
    pub patient: Patient,
    pub therapies: Vec<Therapy>,
    pub as_of: NaiveDate,
    pub full: bool,
}

/// Reads the fields both evaluation RPCs share, collecting every violation.
pub fn read_evaluation(
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
        patient,
        therapies,
        as_of,
        full,
    })
}

/// The therapy filter: known, specified, no duplicates; empty means all, in enum order.
pub fn requested_therapies(r: &mut Reader, raw: &[i32]) -> Vec<Therapy> {
    let mut therapies: Vec<Therapy> = Vec::with_capacity(raw.len());
    for (i, value) in raw.iter().enumerate() {
        let field = format!("therapies[{i}]");
        let Some(therapy) = r.list_entry::<Therapy>(field.clone(), *value) else {
            continue;
        };
        if therapies.contains(&therapy) {
            r.violation(field, format!("{therapy} is listed more than once"));
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
pub fn decision_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
