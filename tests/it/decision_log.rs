//! The decision log over the real socket: every answer is recorded before it is returned,
//! retries are idempotent (AIP-155), identifiers are only ever stored as pseudonyms, and a
//! stored decision can be read, listed and replayed.

use crate::common::*;
use net_pathway::engine::Policy;
use net_pathway::pb::{self, PrimarySite};
use net_pathway::store::Store;
use net_pathway_client::field_violations;
use tonic::Code;

const LU177: Therapy = Therapy::PrrtLu177Dotatate;
/// NHS Digital's published example of a valid NHS number.
const NHS_NUMBER: &str = "9434765919";

fn funding_request(request_id: &str, patient: pb::PatientProfile) -> pb::ClassifyFundingRequest {
    pb::ClassifyFundingRequest {
        request_id: request_id.into(),
        patient: Some(Box::new(patient)),
        therapies: vec![LU177 as i32],
        as_of_date: Some(date(2026, 11, 28)),
        ..Default::default()
    }
}

async fn all_decisions(s: &TestServer) -> Vec<pb::DecisionRecord> {
    s.client
        .list_decisions(pb::ListDecisionsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("list")
        .decisions
}

#[tokio::test]
async fn a_retried_request_id_returns_the_same_decision_without_a_second_record() {
    let s = server().await;
    let request = funding_request(
        "2b9c7f7e-0a3d-4c43-9a1e-6f3c2d1b0a99",
        identified(ta539_small_bowel().england(), NHS_NUMBER),
    );
    let first = s
        .client
        .classify_funding(request.clone())
        .await
        .expect("first");
    let retry = s.client.classify_funding(request).await.expect("retry");
    assert_eq!(first.decision_id, retry.decision_id);
    assert_eq!(first, retry, "the stored answer, exactly");
    assert_eq!(all_decisions(&s).await.len(), 1, "one record");
}

#[tokio::test]
async fn a_request_id_reused_for_a_different_request_is_already_exists() {
    let s = server().await;
    let id = "7d0c1e5a-9b8f-4e2d-8c1b-3a5f6e7d8c9b";
    s.client
        .classify_funding(funding_request(
            id,
            identified(ta539_small_bowel().england(), NHS_NUMBER),
        ))
        .await
        .expect("first");
    let changed = funding_request(
        id,
        identified(ta539_small_bowel().england().ki67(25.0), NHS_NUMBER),
    );
    let status = s
        .client
        .classify_funding(changed)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status
            .message()
            .contains("already used for a different request"),
        "{}",
        status.message()
    );
    // The same id on the other RPC is a different request too.
    let eligibility = pb::EvaluateEligibilityRequest {
        request_id: id.into(),
        patient: Some(Box::new(ta539_small_bowel().england().profile())),
        ..Default::default()
    };
    assert_eq!(
        s.client
            .evaluate_eligibility(eligibility)
            .await
            .expect_err("refused")
            .code(),
        Code::AlreadyExists
    );
    assert_eq!(all_decisions(&s).await.len(), 1);
}

#[tokio::test]
async fn concurrent_retries_of_one_request_id_share_one_decision() {
    let s = server().await;
    let request = funding_request(
        "c0ffee00-1111-4222-8333-444455556666",
        ta539_small_bowel().england().profile(),
    );
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let client = s.client.clone();
            let request = request.clone();
            tokio::spawn(async move { client.classify_funding(request).await })
        })
        .collect();
    let mut ids = Vec::new();
    for call in calls {
        ids.push(call.await.expect("task").expect("answer").decision_id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(all_decisions(&s).await.len(), 1);
}

#[tokio::test]
async fn decisions_are_found_by_nhs_number_and_the_database_holds_no_nhs_number_in_clear() {
    let s = server().await;
    let patient = identified(ta539_small_bowel().england(), "943 476 5919");
    for _ in 0..2 {
        s.client
            .classify_funding(funding_request("", patient.clone()))
            .await
            .expect("classify");
    }
    s.client
        .evaluate_eligibility(pb::EvaluateEligibilityRequest {
            patient: Some(Box::new(patient)),
            ..Default::default()
        })
        .await
        .expect("evaluate");
    // Another patient's decision must not be listed.
    let other = identified(ta539_small_bowel().england(), "4010232137");
    s.client
        .classify_funding(funding_request("", other))
        .await
        .expect("other patient");

    let found = s
        .client
        .list_decisions(pb::ListDecisionsRequest {
            patient_nhs_number: NHS_NUMBER.into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .decisions;
    assert_eq!(found.len(), 3);
    assert!(
        found
            .iter()
            .all(|d| d.patient_pseudonym == found[0].patient_pseudonym
                && d.patient_pseudonym.starts_with("nhs:"))
    );
    for d in &found {
        let stored_patient = match &d.request {
            Some(pb::decision_record::Request::FundingRequest(r)) => r.patient.clone(),
            Some(pb::decision_record::Request::EligibilityRequest(r)) => r.patient.clone(),
            Some(pb::decision_record::Request::ScreeningRequest(r)) => r.patient.clone(),
            None => None,
        };
        assert_eq!(
            stored_patient.and_then(|p| p.identifiers),
            None,
            "identifiers are not stored"
        );
    }

    // Nothing on disk holds the number, in any spelling.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(s.data_dir.path()).expect("data dir") {
        bytes.extend(std::fs::read(entry.expect("entry").path()).expect("read"));
    }
    for spelling in ["9434765919", "943 476 5919", "4010232137"] {
        assert!(
            !bytes
                .windows(spelling.len())
                .any(|w| w == spelling.as_bytes()),
            "{spelling} found on disk"
        );
    }
}

#[tokio::test]
async fn an_invalid_nhs_number_is_a_field_violation() {
    let s = server().await;
    let status = s
        .client
        .classify_funding(funding_request(
            "",
            identified(ta539_small_bowel().england(), "9434765918"),
        ))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        field_violations(&status)[0].field,
        "patient.identifiers.nhs_number"
    );
    assert!(
        all_decisions(&s).await.is_empty(),
        "no decision for a refused request"
    );
}

#[tokio::test]
async fn get_decision_returns_the_full_record() {
    let s = server().await;
    let answer = s
        .client
        .classify_funding(funding_request(
            "",
            identified(ta539_small_bowel().england(), NHS_NUMBER),
        ))
        .await
        .expect("classify");
    let record = s
        .client
        .get_decision(pb::GetDecisionRequest {
            decision_id: answer.decision_id.clone(),
        })
        .await
        .expect("get")
        .decision
        .expect("record");
    assert_eq!(record.kind(), pb::DecisionKind::Funding);
    assert_eq!(record.caller, "anonymous");
    assert_eq!(record.policy, answer.policy);
    assert_eq!(record.as_of_date, Some(date(2026, 11, 28)));
    assert!(record.received_time.is_some());
    assert_eq!(
        record.response,
        Some(pb::decision_record::Response::FundingResponse(answer))
    );
    let observed: Vec<_> = record
        .registry_observations
        .iter()
        .map(|o| (o.registry_id.as_str(), o.actively_enrolled))
        .collect();
    assert_eq!(
        observed,
        [("non-gep-prrt-registry", false)],
        "the record shows what the registry said"
    );

    let missing = s
        .client
        .get_decision(pb::GetDecisionRequest {
            decision_id: "01a22000-0000-7000-8000-000000000000".into(),
        })
        .await
        .expect_err("none");
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(reason(&missing), "DECISION_NOT_FOUND");
    let named = tonic_types::StatusExt::get_error_details(&missing)
        .resource_info()
        .map(|info| (info.resource_type.clone(), info.resource_name.clone()));
    assert_eq!(
        named,
        Some((
            "decision".to_string(),
            "decisions/01a22000-0000-7000-8000-000000000000".to_string()
        ))
    );
    let bad = s
        .client
        .get_decision(pb::GetDecisionRequest {
            decision_id: "x".into(),
        })
        .await
        .expect_err("bad id");
    assert_eq!(field_violations(&bad)[0].field, "decision_id");
}

#[tokio::test]
async fn listing_pages_through_decisions_and_refuses_a_bad_token() {
    let s = server().await;
    for _ in 0..5 {
        s.client
            .classify_funding(funding_request("", ta539_small_bowel().england().profile()))
            .await
            .expect("classify");
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = s
            .client
            .list_decisions(pb::ListDecisionsRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("page");
        pages += 1;
        seen.extend(page.decisions.into_iter().map(|d| d.decision_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!((pages, seen.len()), (3, 5));
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");

    let bad = s
        .client
        .list_decisions(pb::ListDecisionsRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(field_violations(&bad)[0].field, "page_token");

    let first = s
        .client
        .list_decisions(pb::ListDecisionsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("page");
    let other_filters = pb::ListDecisionsRequest {
        page_token: first.next_page_token,
        therapy: LU177 as i32,
        ..Default::default()
    };
    let mismatch = s
        .client
        .list_decisions(other_filters)
        .await
        .expect_err("token from other filters");
    assert_eq!(field_violations(&mismatch)[0].field, "page_token");

    // AIP-158: a page size above the maximum is the maximum; a negative one is refused.
    s.client
        .list_decisions(pb::ListDecisionsRequest {
            page_size: 501,
            ..Default::default()
        })
        .await
        .expect("a page size above the maximum is the maximum");
    let negative = s
        .client
        .list_decisions(pb::ListDecisionsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .expect_err("negative");
    assert_eq!(field_violations(&negative)[0].field, "page_size");
    let route_alone = pb::ListDecisionsRequest {
        funding_route: pb::FundingRoute::AuditRegistryClosed as i32,
        ..Default::default()
    };
    assert_eq!(
        field_violations(
            &s.client
                .list_decisions(route_alone)
                .await
                .expect_err("needs therapy")
        )[0]
        .field,
        "funding_route"
    );
    // Timestamps outside google.protobuf.Timestamp's own range are refused, not saturated.
    let out_of_range = pb::ListDecisionsRequest {
        start_time: Some(prost_types::Timestamp {
            seconds: 1 << 62,
            nanos: 0,
        }),
        end_time: Some(prost_types::Timestamp {
            seconds: 0,
            nanos: -5,
        }),
        ..Default::default()
    };
    let fields: Vec<String> = field_violations(
        &s.client
            .list_decisions(out_of_range)
            .await
            .expect_err("out of range"),
    )
    .into_iter()
    .map(|v| v.field)
    .collect();
    assert_eq!(fields, vec!["start_time", "end_time"]);
}

#[tokio::test]
async fn decisions_are_filtered_by_therapy_and_route() {
    let s = server().await;
    let bronchial = ta539_small_bowel()
        .england()
        .primary(PrimarySite::Lung)
        .lung_class(pb::LungClassification::TypicalCarcinoid);
    s.client
        .classify_funding(funding_request("", bronchial.profile()))
        .await
        .expect("bronchial");
    s.client
        .classify_funding(funding_request("", ta539_small_bowel().england().profile()))
        .await
        .expect("midgut");
    let closed = s
        .client
        .list_decisions(pb::ListDecisionsRequest {
            therapy: LU177 as i32,
            funding_route: pb::FundingRoute::AuditRegistryClosed as i32,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(closed.decisions.len(), 1);
}

#[tokio::test]
async fn replay_shows_what_a_policy_change_would_change_and_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = Store::default_url(dir.path());
    let krenning_2 = ta539_small_bowel().england().krenning(2);
    let decision_id = {
        let s = server_on(
            Policy::bundled().expect("bundled"),
            &url,
            tempfile::tempdir().expect("dir"),
        )
        .await;
        let answer = s
            .client
            .evaluate_eligibility(pb::EvaluateEligibilityRequest {
                patient: Some(Box::new(krenning_2.profile())),
                therapies: vec![LU177 as i32],
                as_of_date: Some(date(2026, 11, 28)),
                ..Default::default()
            })
            .await
            .expect("evaluate");
        assert_eq!(answer.therapies[0].status(), Status::Eligible);
        answer.decision_id
    };
    // The candidate policy needs Krenning 3 where the licence says uptake equal to liver (2).
    let bundled = include_str!("../../policy/net-pathway.toml");
    let threshold = "params = { score = 2 }   # the Lutathera licence's own words";
    let edited = bundled
        .replacen(threshold, "params = { score = 3 }   #", 1)
        .replacen("version = \"2026.12.1\"", "version = \"replay-test\"", 1);
    let s = server_on(
        Policy::parse("edited.toml", &edited).expect("valid"),
        &url,
        tempfile::tempdir().expect("dir"),
    )
    .await;
    let replay = s
        .client
        .replay_decision(pb::ReplayDecisionRequest {
            decision_id: decision_id.clone(),
        })
        .await
        .expect("replay");
    let (then, now) = (
        replay.original_policy.expect("original"),
        replay.current_policy.expect("current"),
    );
    assert_eq!(then.version, "2026.12.1");
    assert_eq!(now.version, "replay-test");
    // The record names the build that decided, beside the policy: here, this one.
    assert_eq!(then.service_build, net_pathway::SERVICE_BUILD);
    assert_eq!(now.service_build, net_pathway::SERVICE_BUILD);
    let lu = &replay.therapies[0];
    assert!(lu.changed);
    assert_eq!(lu.original_status(), Status::Eligible);
    assert_eq!(lu.current_status(), Status::NotEligible);
    assert_eq!(lu.changed_criteria, vec!["sstr-positive"]);
}

#[tokio::test]
async fn when_the_decision_log_cannot_be_written_no_decision_is_returned() {
    let s = server().await;
    // The database refuses every record: the decision log's table is no longer there.
    let gone = "ALTER TABLE decisions RENAME TO decisions_elsewhere";
    match &s.store {
        Store::Sqlite(pool) => sqlx::query(gone).execute(pool).await.map(|_| ()),
        Store::Postgres(pool) => sqlx::query(gone).execute(pool).await.map(|_| ()),
    }
    .expect("rename");
    let status = s
        .client
        .classify_funding(funding_request("", ta539_small_bowel().england().profile()))
        .await
        .expect_err("no unrecorded decision");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// GetDecision, a retry and ListDecisions return exactly the bytes the caller received, in
/// each citation style; a shared answer's record is under half an inline one's.
#[tokio::test]
async fn the_record_returns_the_answer_as_received_in_every_citation_style() {
    use prost::Message;
    let s = server().await;
    let styles = [
        ("unset", pb::CitationStyle::Unspecified, true),
        ("inline", pb::CitationStyle::Inline, true),
        ("shared", pb::CitationStyle::Shared, false),
    ];
    let mut kept_sizes = Vec::new();
    for (n, (name, style, inline)) in styles.into_iter().enumerate() {
        let request = pb::EvaluateEligibilityRequest {
            request_id: format!("5e0b7c1a-2d3f-4a5b-8c6d-7e8f9a0b1c{n:02}"),
            patient: Some(Box::new(identified(
                ta539_small_bowel().england(),
                NHS_NUMBER,
            ))),
            citations: style as i32,
            ..Default::default()
        };
        let answered = s
            .client
            .evaluate_eligibility(request.clone())
            .await
            .expect("answered");
        assert_eq!(answered.therapies.len(), 14, "{name}: every therapy");
        assert_eq!(answered.sources.is_empty(), inline, "{name}");
        let stored = s
            .client
            .get_decision(pb::GetDecisionRequest {
                decision_id: answered.decision_id.clone(),
            })
            .await
            .expect("stored")
            .decision
            .expect("record");
        let Some(pb::decision_record::Response::EligibilityResponse(returned)) = stored.response
        else {
            panic!("{name}: an eligibility record");
        };
        assert_eq!(
            returned.encode_to_vec(),
            answered.encode_to_vec(),
            "{name}: GetDecision returns the bytes the caller received"
        );
        let retried = s.client.evaluate_eligibility(request).await.expect("retry");
        assert_eq!(retried, answered, "{name}: a retry gets the same answer");
        let kept = s
            .store
            .decision(&answered.decision_id)
            .await
            .expect("store")
            .expect("kept");
        kept_sizes.push(kept.record.len());
    }
    assert!(
        kept_sizes[2] * 2 < kept_sizes[1],
        "a shared record is under half an inline one: {kept_sizes:?}"
    );
    let listed = all_decisions(&s).await;
    assert_eq!(listed.len(), 3);
    for record in listed {
        let Some(pb::decision_record::Response::EligibilityResponse(answer)) = record.response
        else {
            panic!("an eligibility record");
        };
        let Some(pb::decision_record::Request::EligibilityRequest(request)) = record.request else {
            panic!("an eligibility request");
        };
        assert_eq!(
            answer.sources.is_empty(),
            request.citations != pb::CitationStyle::Shared as i32,
            "ListDecisions gives each answer in its request's style"
        );
    }
}
