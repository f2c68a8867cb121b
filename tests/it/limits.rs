//! Limits and overload: an oversized request is refused without harm to other calls, calls
//! beyond the concurrency limit are shed with RetryInfo, and a call whose deadline has passed
//! does no work and writes no record.

use std::time::Duration;

use crate::common::*;
use net_pathway::pb;
use net_pathway::pb::eligibility_service_client::EligibilityServiceClient;
use net_pathway::store::DecisionFilter;
use tonic::Code;
use tonic_types::StatusExt;

fn lu177_request(patient: pb::PatientProfile) -> pb::EvaluateEligibilityRequest {
    pb::EvaluateEligibilityRequest {
        patient: Some(Box::new(patient)),
        therapies: vec![Therapy::PrrtLu177Dotatate as i32],
        ..Default::default()
    }
}

async fn stored_decisions(s: &TestServer) -> usize {
    s.store
        .list_decisions(&DecisionFilter::default(), None, 100)
        .await
        .expect("list")
        .len()
}

#[tokio::test]
async fn an_oversized_request_is_refused_and_other_calls_carry_on() {
    let s = server().await;
    let mut huge = ta539_small_bowel().england().profile();
    huge.progression
        .get_or_insert_with(Default::default)
        .assessed_by = "x".repeat(2 * 1024 * 1024);
    let (big, normal) = tokio::join!(
        s.client.evaluate_eligibility(lu177_request(huge)),
        s.client
            .evaluate_eligibility(lu177_request(ta539_small_bowel().england().profile())),
    );
    // tonic refuses a message over the decoding limit with OUT_OF_RANGE, naming the limit.
    let big = big.expect_err("too large");
    assert_eq!(big.code(), Code::OutOfRange, "{big:?}");
    assert!(
        big.message().contains("the limit is: 65536 bytes"),
        "{}",
        big.message()
    );
    assert_eq!(
        normal.expect("normal call").therapies[0].status(),
        Status::Eligible
    );
    assert_eq!(
        stored_decisions(&s).await,
        1,
        "only the normal call was recorded"
    );
}

#[tokio::test]
async fn calls_beyond_the_concurrency_limit_are_shed_with_retry_info() {
    let s = server().await;
    let held = s.hold_every_call_place().await;
    let status = s
        .client
        .evaluate_eligibility(lu177_request(ta539_small_bowel().england().profile()))
        .await
        .expect_err("shed");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(&status), "OVERLOADED");
    let retry = status
        .get_error_details()
        .retry_info()
        .cloned()
        .expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(Duration::from_millis(100)));
    assert_eq!(stored_decisions(&s).await, 0);
    drop(held);
    s.client
        .evaluate_eligibility(lu177_request(ta539_small_bowel().england().profile()))
        .await
        .expect("admitted again");
}

/// Four FULL calls may wait for each place (`WAITING_PER_PLACE`); one more is refused at once
/// with RESOURCE_EXHAUSTED and RetryInfo, so FULL calls cannot fill the calls in progress with
/// waiters. The waiters are answered when a place is free.
#[tokio::test]
async fn full_calls_beyond_the_waiting_room_are_shed_with_retry_info() {
    let s = server_configured(
        net_pathway::config::Limits {
            max_full_answers: 1,
            ..test_limits()
        },
        true,
    )
    .await;
    let held = std::sync::Arc::clone(s.state.full_answers.places())
        .acquire_owned()
        .await
        .expect("the place");
    let full = pb::EvaluateEligibilityRequest {
        view: pb::EvaluationView::Full as i32,
        ..lu177_request(ta539_small_bowel().england().profile())
    };
    // The place held here is no caller's, so every caller's permit goes to a waiting call.
    let callers = 1 + net_pathway::WAITING_PER_PLACE;
    let waiting: Vec<_> = (0..callers)
        .map(|_| {
            let (client, full) = (s.client.clone(), full.clone());
            tokio::spawn(async move { client.evaluate_eligibility(full).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.state.full_answers.callers() < callers {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the calls never waited"
        );
        tokio::task::yield_now().await;
    }
    let status = s
        .client
        .evaluate_eligibility(full)
        .await
        .expect_err("no room to wait");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("the 1 places for FULL answers being decided or sent are held and 4 more FULL calls wait"),
        "{status:?}"
    );
    assert!(
        status.get_error_details().retry_info().is_some(),
        "{status:?}"
    );
    drop(held);
    for call in waiting {
        let answer = call
            .await
            .expect("task")
            .expect("answered once a place is free");
        assert!(!answer.therapies[0].criteria.is_empty());
    }
    assert_eq!(
        stored_decisions(&s).await,
        callers,
        "the refused call recorded nothing"
    );
}

#[tokio::test]
async fn a_call_whose_deadline_has_passed_does_no_work_and_writes_no_record() {
    let s = server().await;
    let mut raw = EligibilityServiceClient::new(s.client.channel());
    let mut request = tonic::Request::new(lu177_request(ta539_small_bowel().england().profile()));
    // The deadline is already spent when the server sees the call.
    request.metadata_mut().insert(
        "grpc-timeout",
        tonic::metadata::MetadataValue::from_static("1n"),
    );
    let status = raw
        .evaluate_eligibility(request)
        .await
        .expect_err("too late");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    // Once the server has counted the call as ended, it has done all it will for it.
    let ended = |s: &TestServer| {
        s.calls_ended("EvaluateEligibility", "DeadlineExceeded")
            + s.calls_ended("EvaluateEligibility", "Cancelled")
    };
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while ended(&s) == 0 {
        assert!(std::time::Instant::now() < until, "the call never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        stored_decisions(&s).await,
        0,
        "no record for a call that was too late"
    );
}

/// FULL answers are built a few at a time (`--max-full-answers`), since each is some hundreds
/// of KB while it is built and recorded. With every place held, a FULL call waits and, when its
/// deadline passes, is told why with nothing recorded; a BASIC call beside it is answered at
/// once; once a place is free the FULL call is answered.
#[tokio::test]
async fn full_answers_wait_for_a_place_within_their_deadline() {
    let s = server_configured(
        net_pathway::config::Limits {
            max_deadline: Duration::from_millis(300),
            ..test_limits()
        },
        true,
    )
    .await;
    let places = u32::try_from(s.state.limits.max_full_answers).expect("places");
    let held = std::sync::Arc::clone(s.state.full_answers.places())
        .acquire_many_owned(places)
        .await
        .expect("every place");
    let full = pb::EvaluateEligibilityRequest {
        view: pb::EvaluationView::Full as i32,
        ..lu177_request(ta539_small_bowel().england().profile())
    };
    let unset = pb::EvaluateEligibilityRequest {
        view: pb::EvaluationView::Unspecified as i32,
        ..full.clone()
    };
    let status = s
        .client
        .evaluate_eligibility(unset)
        .await
        .expect_err("an unset view is FULL, and waits too");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let status = s
        .client
        .evaluate_eligibility(full.clone())
        .await
        .expect_err("no place within the deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status
            .message()
            .contains("waited for one of the 32 places for FULL answers being decided"),
        "{status:?}"
    );
    let basic = s
        .client
        .evaluate_eligibility(pb::EvaluateEligibilityRequest {
            view: pb::EvaluationView::Basic as i32,
            ..lu177_request(ta539_small_bowel().england().profile())
        })
        .await
        .expect("BASIC does not wait");
    assert!(!basic.therapies.is_empty());
    assert_eq!(stored_decisions(&s).await, 1, "only the BASIC call");
    drop(held);
    let answer = s
        .client
        .evaluate_eligibility(full)
        .await
        .expect("a free place");
    assert!(!answer.therapies[0].criteria.is_empty(), "FULL explains");
}
