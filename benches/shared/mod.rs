//! What both engine benches run: every answer for a patient, and the policy's example cohort.

use std::hint::black_box;

use net_pathway::domain::{Patient, Therapy};
use net_pathway::engine::{Detail, Policy};

/// Every eligibility and funding answer for one patient, as the unary RPCs compute them:
/// `Detail::OUTCOME` for the BASIC view, `Detail::EXPLAINED` for FULL.
pub fn decide_all(
    policy: &Policy,
    patient: &Patient,
    as_of: chrono::NaiveDate,
    detail: Detail,
) -> usize {
    let facts = policy.facts(patient, as_of, detail);
    let mut answered = 0;
    for &therapy in Therapy::ALL {
        answered += black_box(policy.eligibility(&facts, therapy))
            .criteria
            .len();
        answered += black_box(policy.funding(&facts, therapy)).criteria.len();
    }
    answered
}

/// The policy's own example cases: varied sites, grades, nations and dates.
pub fn cohort(policy: &Policy) -> Vec<(Patient, chrono::NaiveDate)> {
    policy
        .cases
        .iter()
        .map(|c| (c.patient.clone(), c.as_of))
        .collect()
}

/// The bundled policy; a bench cannot run without it, so it exits with the reason.
pub fn bundled_policy() -> Policy {
    match Policy::bundled() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("the bundled policy does not load: {e}");
            std::process::exit(2);
        }
    }
}
