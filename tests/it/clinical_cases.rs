//! The clinical case suite over the socket: every case in `tests/cases/clinical-cases.toml`
//! sent through the client library to the real server, one EvaluateEligibility and one
//! ClassifyFunding per case for all its therapies, and each therapy's status and funding route
//! checked against the case. The whole suite (missing inputs, MDTs, sites, flags, the BASIC
//! view, coverage) runs in-process against the engine in `src/api/clinical_cases.rs`; this
//! shows that the server answers callers what the engine decides.

use net_pathway::google::r#type::Date;
use net_pathway::pb;
use prost_reflect::DescriptorPool;

use crate::common::*;

#[path = "../cases/case_file.rs"]
mod case_file;

use case_file::{CaseFile, enum_name};

fn enum_value<E>(prefix: &str, short: &str, from: fn(&str) -> Option<E>) -> E {
    let name = enum_name(prefix, short);
    from(&name).unwrap_or_else(|| panic!("no {name} in the contract"))
}

#[tokio::test]
async fn every_case_is_answered_over_the_socket_as_the_engine_decides() {
    let file = CaseFile::read();
    let pool = DescriptorPool::decode(net_pathway::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let s = server().await;
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in &file.case {
        let patient = case.patient(&pool);
        let as_of = case.as_of();
        let therapies: Vec<i32> = case
            .expect
            .iter()
            .map(|x| enum_value("THERAPY", &x.therapy, pb::Therapy::from_str_name) as i32)
            .collect();
        let eligibility = s
            .client
            .evaluate_eligibility(pb::EvaluateEligibilityRequest {
                patient: Some(Box::new(patient.clone())),
                therapies: therapies.clone(),
                as_of_date: as_of,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("case '{}': {status:?}", case.name));
        let funding = s
            .client
            .classify_funding(pb::ClassifyFundingRequest {
                patient: Some(Box::new(patient)),
                therapies,
                as_of_date: as_of,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("case '{}': {status:?}", case.name));
        for expect in &case.expect {
            let name = format!("{} / {}", case.name, expect.therapy);
            let therapy = enum_value("THERAPY", &expect.therapy, pb::Therapy::from_str_name);

            if let Some(status) = &expect.status {
                checked += 1;
                let want = enum_value(
                    "ELIGIBILITY_STATUS",
                    status,
                    pb::EligibilityStatus::from_str_name,
                );
                let got = eligibility
                    .therapies
                    .iter()
                    .find(|t| t.therapy() == therapy)
                    .map(|t| t.status())
                    .unwrap_or_else(|| panic!("{name}: not answered"));
                if got != want {
                    failures.push(format!("{name}: status {got:?}, expected {want:?}"));
                }
            }
            if let Some(route) = &expect.route {
                checked += 1;
                let want = enum_value("FUNDING_ROUTE", route, pb::FundingRoute::from_str_name);
                let got = funding
                    .therapies
                    .iter()
                    .find(|t| t.therapy() == therapy)
                    .map(|t| t.route())
                    .unwrap_or_else(|| panic!("{name}: not answered"));
                if got != want {
                    failures.push(format!("{name}: route {got:?}, expected {want:?}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} answers differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 200, "checked {checked} statuses and routes");
}
