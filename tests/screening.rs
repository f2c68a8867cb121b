//! Cohort screening over one bidirectional stream: answers tagged by correlation id, errors
//! kept with their patient, decisions recorded like unary ones, and the per-stream limit.

mod common;

use std::collections::HashMap;

use common::*;
use net_pathway::pb;
use net_pathway::pb::screen_cohort_response::Result as Answer;

fn screening(id: &str, patient: &Patient) -> pb::ScreenCohortRequest {
    pb::ScreenCohortRequest {
        correlation_id: id.into(),
        patient: Some(patient.profile()),
        therapies: vec![Therapy::PrrtLu177Dotatate as i32],
        as_of_date: Some(date(2026, 11, 1)),
        view: pb::EvaluationView::Basic as i32,
    }
}

/// Sends `requests` on one stream and collects every answer by correlation id.
async fn screen(
    server: &TestServer,
    requests: Vec<pb::ScreenCohortRequest>,
) -> (HashMap<String, Answer>, Option<tonic::Status>) {
    let mut answers = server
        .client
        .screen_cohort(tokio_stream::iter(requests))
        .await
        .expect("stream opens");
    let mut by_id = HashMap::new();
    loop {
        match answers.message().await {
            Ok(Some(a)) => {
                let previous = by_id.insert(a.correlation_id.clone(), a.result.expect("a result"));
                assert!(previous.is_none(), "one answer per patient");
            }
            Ok(None) => return (by_id, None),
            Err(status) => return (by_id, Some(status)),
        }
    }
}

/// A bronchial NET: SSTR-positive, progressive, G2 (Ki-67 5 %), metastatic, England.
fn bronchial_net() -> Patient {
    Patient::new()
        .england()
        .aged(58)
        .primary(pb::PrimarySite::Lung)
        .lung_class(pb::LungClassification::AtypicalCarcinoid)
        .ki67(5.0)
        .metastatic()
        .progressive(true)
        .krenning(3)
}

#[tokio::test]
async fn a_clinic_list_is_screened_and_an_invalid_profile_does_not_stop_the_stream() {
    let server = server().await;
    let invalid = ta539_small_bowel().england().ki67(140.0);
    let (answers, ending) = screen(
        &server,
        vec![
            screening("clinic-row-1", &ta539_small_bowel().england()),
            screening("clinic-row-2", &invalid),
            screening("clinic-row-3", &bronchial_net()),
        ],
    )
    .await;
    assert!(ending.is_none(), "the stream ends when the list does");
    assert_eq!(answers.len(), 3);

    // TA539: small-bowel GEP NET in England, routinely commissioned under the TA.
    let Answer::Screened(row1) = &answers["clinic-row-1"] else {
        panic!("row 1 screened: {:?}", answers["clinic-row-1"])
    };
    let eligibility = row1.eligibility.as_ref().expect("eligibility");
    let funding = row1.funding.as_ref().expect("funding");
    assert_eq!(eligibility.therapies[0].status(), Status::Eligible);
    assert_eq!(
        funding.therapies[0].route(),
        Route::RoutinelyCommissionedNiceTa
    );
    assert!(
        eligibility.therapies[0].criteria.is_empty(),
        "BASIC view: status only"
    );

    // Ki-67 is a percentage: 140 is refused for this patient only, with the field named.
    let Answer::Error(error) = &answers["clinic-row-2"] else {
        panic!("row 2 refused: {:?}", answers["clinic-row-2"])
    };
    assert_eq!(error.code, tonic::Code::InvalidArgument as i32);
    let status = net_pathway::client::stream_error(error);
    let fields: Vec<String> = net_pathway::client::field_violations(&status)
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["patient.tumour.ki67_percent"], "{status:?}");

    // Non-GEP (bronchial): clinically eligible; funding only through the audit registry,
    // whose new inclusion is on hold (reference: Lu-177 non-GEP position).
    let Answer::Screened(row3) = &answers["clinic-row-3"] else {
        panic!("row 3 screened: {:?}", answers["clinic-row-3"])
    };
    assert_eq!(
        row3.eligibility.as_ref().expect("eligibility").therapies[0].status(),
        Status::Eligible
    );
    assert_eq!(
        row3.funding.as_ref().expect("funding").therapies[0].route(),
        Route::AuditRegistryClosed
    );
}

#[tokio::test]
async fn each_screened_patient_is_recorded_like_the_unary_calls_would_record_them() {
    let server = server().await;
    let (answers, _) = screen(
        &server,
        vec![screening("mdt-list-7", &ta539_small_bowel().england())],
    )
    .await;
    let Answer::Screened(result) = &answers["mdt-list-7"] else {
        panic!("screened")
    };
    let eligibility = result.eligibility.as_ref().expect("eligibility");
    let funding = result.funding.as_ref().expect("funding");
    assert_ne!(eligibility.decision_id, funding.decision_id);
    for (decision_id, kind) in [
        (&eligibility.decision_id, pb::DecisionKind::Eligibility),
        (&funding.decision_id, pb::DecisionKind::Funding),
    ] {
        let record = server
            .client
            .get_decision(pb::GetDecisionRequest {
                decision_id: decision_id.clone(),
            })
            .await
            .expect("recorded")
            .decision
            .expect("record");
        assert_eq!(record.kind(), kind);
        assert_eq!(record.caller, "anonymous");
    }
    let replayed = server
        .client
        .replay_decision(pb::ReplayDecisionRequest {
            decision_id: funding.decision_id.clone(),
        })
        .await
        .expect("a screened decision replays like a unary one");
    assert!(
        replayed.therapies.iter().all(|t| !t.changed),
        "{replayed:?}"
    );
}

#[tokio::test]
async fn a_missing_correlation_id_is_that_patients_error_with_every_violation() {
    let server = server().await;
    let mut unlabelled = screening("", &ta539_small_bowel().england().ki67(140.0));
    unlabelled.correlation_id = String::new();
    let (answers, ending) = screen(
        &server,
        vec![unlabelled, screening("after", &bronchial_net())],
    )
    .await;
    assert!(ending.is_none());
    let Answer::Error(error) = &answers[""] else {
        panic!("refused")
    };
    let status = net_pathway::client::stream_error(error);
    let fields: Vec<String> = net_pathway::client::field_violations(&status)
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        ["correlation_id", "patient.tumour.ki67_percent"],
        "{status:?}"
    );
    assert!(matches!(answers["after"], Answer::Screened(_)));
}

#[tokio::test]
async fn a_stream_past_the_patient_limit_is_answered_up_to_it_then_ends_resource_exhausted() {
    let server = server_configured(
        net_pathway::api::Limits {
            max_patients_per_stream: 5,
            ..test_limits()
        },
        true,
    )
    .await;
    let requests = (0..8)
        .map(|i| screening(&format!("row-{i}"), &ta539_small_bowel().england()))
        .collect();
    let (answers, ending) = screen(&server, requests).await;
    assert_eq!(answers.len(), 5, "the first five are answered");
    let ending = ending.expect("the stream ends with an error");
    assert_eq!(ending.code(), tonic::Code::ResourceExhausted, "{ending:?}");
    assert!(ending.message().contains("new stream"), "{ending:?}");
}

#[tokio::test]
async fn with_the_decision_log_off_decisions_are_answered_but_not_recorded() {
    let server = server_configured(test_limits(), false).await;
    let answer = server
        .client
        .evaluate_eligibility(pb::EvaluateEligibilityRequest {
            patient: Some(ta539_small_bowel().england().profile()),
            ..Default::default()
        })
        .await
        .expect("answered");
    let missing = server
        .client
        .get_decision(pb::GetDecisionRequest {
            decision_id: answer.decision_id,
        })
        .await
        .expect_err("not recorded");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let metrics = server
        .state
        .metrics
        .render(&server.state, &Default::default());
    assert!(
        metrics.contains("netpathway_decision_log_enabled 0"),
        "{metrics}"
    );
}
