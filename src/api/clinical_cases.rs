//! The clinical case suite, in-process: `tests/cases/clinical-cases.toml` decided by the engine
//! through the same request reading and answer building the RPCs use, without a socket. Each
//! case is a patient written in the proto JSON mapping (the spelling grpcurl uses), the
//! expected answer per therapy, and the source that makes it right. The cases were written from
//! the clinical reference, not from the engine's output. `tests/it/clinical_cases.rs` sends
//! every case over a socket as well.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::DescriptorPool;
use tonic::Status;

use super::{eligibility, funding, read_evaluation};
use crate::engine::Policy;
use crate::google::r#type::Date;
use crate::pb;
use crate::store::pseudonym::Pseudonymiser;

#[path = "../../tests/cases/case_file.rs"]
mod case_file;

use case_file::{CaseFile, enum_name};

/// The eligibility and funding answers for one therapy in `view`, as the unary RPCs build them
/// for a patient with no registry enrolments.
fn decide(
    policy: &Policy,
    patient: &pb::PatientProfile,
    therapy: pb::Therapy,
    as_of: Option<Date>,
    view: pb::EvaluationView,
) -> Result<(pb::TherapyEligibility, pb::TherapyFunding), Status> {
    let pseudonymiser =
        Pseudonymiser::new(&[7; 32]).map_err(|e| Status::internal(e.to_string()))?;
    let e = read_evaluation(
        &pseudonymiser,
        "",
        Some(patient),
        &[therapy as i32],
        as_of.as_ref(),
        view as i32,
        pb::CitationStyle::Inline as i32,
    )?;
    let facts = policy.facts(&e.patient, e.as_of, e.detail());
    let mut eligibility = eligibility::answer(policy, &facts, &e, String::new());
    let mut funding = funding::answer(policy, &facts, &e, String::new());
    Ok((eligibility.therapies.remove(0), funding.therapies.remove(0)))
}

fn flag_ids(answer: &pb::TherapyEligibility) -> Vec<&str> {
    answer
        .safety_flags
        .iter()
        .map(|f| f.flag_id.as_str())
        .collect()
}

fn site_ids(answer: &pb::TherapyFunding) -> Vec<&str> {
    answer
        .delivery_sites
        .iter()
        .map(|s| s.id.as_str())
        .collect()
}

#[test]
fn the_clinical_case_suite() {
    let file = CaseFile::read();
    let pool = DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let policy = Policy::bundled().unwrap_or_else(|e| panic!("bundled policy: {e}"));
    let mut failures = Vec::new();
    let mut coverage: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut expectations = 0;

    for case in &file.case {
        assert!(
            !case.source.trim().is_empty(),
            "case '{}' names its source",
            case.name
        );
        let patient = case.patient(&pool);
        let as_of = case.as_of();
        let nation = patient
            .demographics
            .as_ref()
            .map(|d| d.nation())
            .unwrap_or_default();
        for expect in &case.expect {
            expectations += 1;
            let therapy = pb::Therapy::from_str_name(&enum_name("THERAPY", &expect.therapy))
                .unwrap_or_else(|| {
                    panic!("case '{}': unknown therapy {}", case.name, expect.therapy)
                });
            let full = decide(&policy, &patient, therapy, as_of, pb::EvaluationView::Full)
                .unwrap_or_else(|status| panic!("case '{}': {status:?}", case.name));
            let (eligibility, funding) = full;
            // The BASIC view, for screening, gives the same status and route as FULL.
            let basic = decide(&policy, &patient, therapy, as_of, pb::EvaluationView::Basic)
                .map(|(e, f)| (e.status(), f.route()))
                .unwrap_or_else(|status| panic!("case '{}': {status:?}", case.name));
            let mut fail =
                |what: String| failures.push(format!("{} / {}: {what}", case.name, expect.therapy));
            if basic != (eligibility.status(), funding.route()) {
                fail(format!(
                    "BASIC answers {basic:?}, FULL {:?}",
                    (eligibility.status(), funding.route())
                ));
            }
            // Position 1: every answer names the MDT that decides.
            if eligibility.deciding_mdt.is_none() || funding.deciding_mdt.is_none() {
                fail("an answer names no deciding MDT".into());
            }

            if let Some(status) = &expect.status {
                let want = enum_name("ELIGIBILITY_STATUS", status);
                let got = eligibility.status().as_str_name();
                if want != got {
                    fail(format!(
                        "status {got}, expected {want} ({})",
                        eligibility.summary
                    ));
                }
                coverage
                    .entry(expect.therapy.clone())
                    .or_default()
                    .insert(format!("status:{status}"));
            }
            if let Some(route) = &expect.route {
                let want = enum_name("FUNDING_ROUTE", route);
                let got = funding.route().as_str_name();
                if want != got {
                    fail(format!(
                        "route {got}, expected {want} ({})",
                        funding.summary
                    ));
                }
                coverage
                    .entry(expect.therapy.clone())
                    .or_default()
                    .insert(format!("nation:{}", nation.as_str_name()));
            }
            if let Some(missing) = &expect.missing
                && *missing != eligibility.missing_inputs
            {
                fail(format!(
                    "missing inputs {:?}, expected {missing:?}",
                    eligibility.missing_inputs
                ));
            }
            if let Some(missing) = &expect.funding_missing
                && *missing != funding.missing_inputs
            {
                fail(format!(
                    "funding missing inputs {:?}, expected {missing:?}",
                    funding.missing_inputs
                ));
            }
            if let Some(mdt) = &expect.mdt {
                let got = funding
                    .deciding_mdt
                    .as_ref()
                    .map(|m| m.id.as_str())
                    .unwrap_or("");
                if got != mdt {
                    fail(format!("deciding MDT {got}, expected {mdt}"));
                }
            }
            if let Some(sites) = &expect.sites
                && site_ids(&funding) != sites.iter().map(String::as_str).collect::<Vec<_>>()
            {
                fail(format!(
                    "sites {:?}, expected {sites:?}",
                    site_ids(&funding)
                ));
            }
            if let Some(name) = &expect.commissioner {
                let got = funding
                    .commissioner
                    .as_ref()
                    .map(|c| c.name.as_str())
                    .unwrap_or("");
                if got != name {
                    fail(format!("commissioner '{got}', expected '{name}'"));
                }
            }
            if let Some(id) = &expect.route_id
                && funding.route_id != *id
            {
                fail(format!("route id {}, expected {id}", funding.route_id));
            }
            for flag in &expect.absent_flags {
                if flag_ids(&eligibility).contains(&flag.as_str()) {
                    fail(format!("flag {flag} must not be raised"));
                }
            }
            for flag in &expect.flags {
                if !flag_ids(&eligibility).contains(&flag.as_str()) {
                    fail(format!(
                        "flag {flag} missing from {:?}",
                        flag_ids(&eligibility)
                    ));
                }
            }
        }
    }

    assert!(
        failures.is_empty(),
        "{} of {expectations} expectations failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        file.case.len() >= 80,
        "the suite has at least 80 cases, found {}",
        file.case.len()
    );

    // Coverage: every therapy has an eligible, a not-eligible and an indeterminate case, and a
    // funding case in both nations.
    for therapy in (1..).map_while(|n| pb::Therapy::try_from(n).ok()) {
        let key = therapy
            .as_str_name()
            .trim_start_matches("THERAPY_")
            .to_ascii_lowercase();
        let seen = coverage.get(&key).cloned().unwrap_or_default();
        for needed in [
            "status:eligible",
            "status:not_eligible",
            "status:indeterminate",
            "nation:NATION_ENGLAND",
            "nation:NATION_WALES",
        ] {
            assert!(
                seen.contains(needed),
                "{key} needs a case with {needed}; has {seen:?}"
            );
        }
    }
}
