//! The Rust client as another hospital service uses it: `dns:///` and several endpoints
//! balanced, a lazy client that starts before the server, calls shed with RetryInfo tried again
//! after the delay asked, a request_id given to an evaluation that has none, and the caller's
//! own metadata in and the call's trace id out.

use std::time::Duration;

use net_pathway::pb;
use net_pathway_client::{ClientOptions, NetPathwayClient};
use tonic::Code;

use crate::common::*;

fn lu177_request() -> pb::EvaluateEligibilityRequest {
    pb::EvaluateEligibilityRequest {
        patient: Some(Box::new(ta539_small_bowel().england().profile())),
        therapies: vec![Therapy::PrrtLu177Dotatate as i32],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_dns_target_is_resolved_and_called() {
    let s = server().await;
    let client = NetPathwayClient::connect(format!("dns:///127.0.0.1:{}", s.address.port()))
        .await
        .expect("resolved");
    let policy = client
        .get_active_policy(pb::GetActivePolicyRequest::default())
        .await
        .expect("answered through the balanced channel");
    assert!(!policy.therapies.is_empty());
}

#[tokio::test]
async fn calls_are_balanced_over_several_endpoints() {
    let (a, b) = (server().await, server().await);
    let client = NetPathwayClient::builder(format!("http://{}", a.address))
        .endpoint(format!("http://{}", b.address))
        .connect()
        .await
        .expect("both endpoints");
    for _ in 0..40 {
        client
            .get_active_policy(pb::GetActivePolicyRequest::default())
            .await
            .expect("answered");
    }
    let (to_a, to_b) = (
        a.calls_ended("GetActivePolicy", "Ok"),
        b.calls_ended("GetActivePolicy", "Ok"),
    );
    assert_eq!(to_a + to_b, 40);
    assert!(
        to_a > 0 && to_b > 0,
        "{to_a} calls to one server, {to_b} to the other"
    );
}

#[tokio::test]
async fn a_bad_target_says_what_is_wrong_with_it() {
    for (target, says) in [
        ("dns:///net-pathway", "names its port"),
        (
            "dns://10.0.0.2/net-pathway:50051",
            "no DNS server authority",
        ),
        ("not a uri", "invalid endpoint 'not a uri'"),
    ] {
        let error = NetPathwayClient::connect(target)
            .await
            .expect_err(target)
            .to_string();
        assert!(error.contains(says), "{target}: {error}");
    }
}

#[tokio::test]
async fn a_lazy_client_is_made_before_its_server_starts() {
    let port = free_port();
    let client = NetPathwayClient::builder(format!("http://127.0.0.1:{port}"))
        .retries(0)
        .connect_lazy()
        .expect("made without a server");
    let refused = client
        .get_active_policy(pb::GetActivePolicyRequest::default())
        .await
        .expect_err("nothing listens yet");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    let data = tempfile::tempdir().expect("data dir");
    let mut server = start_binary(port, data.path(), &[], "warn", std::process::Stdio::null());
    connect_when_serving(port, ClientOptions::default()).await;
    let answered = client
        .get_active_policy(pb::GetActivePolicyRequest::default())
        .await;
    let _ = server.kill();
    let _ = server.wait();
    assert!(answered.is_ok(), "{answered:?}");
}

#[tokio::test]
async fn a_shed_call_is_tried_again_after_the_delay_its_retry_info_asks() {
    let s = server().await;
    let client = NetPathwayClient::builder(format!("http://{}", s.address))
        .retries(50)
        .deadline(Duration::from_secs(20))
        .connect()
        .await
        .expect("connect");
    let held = s.hold_every_call_place().await;
    let call = tokio::spawn(async move { client.evaluate_eligibility(lu177_request()).await });
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while s.calls_ended("EvaluateEligibility", "ResourceExhausted") == 0 {
        assert!(std::time::Instant::now() < until, "the call was never shed");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(held);
    let answer = call.await.expect("joined").expect("answered once admitted");
    assert_eq!(answer.therapies.len(), 1);
    assert_eq!(s.calls_ended("EvaluateEligibility", "Ok"), 1);
}

#[tokio::test]
async fn retries_stop_at_the_callers_own_deadline() {
    let s = server().await;
    let client = NetPathwayClient::builder(format!("http://{}", s.address))
        .retries(1000)
        .connect()
        .await
        .expect("connect");
    let _held = s.hold_every_call_place().await;
    let mut request = tonic::Request::new(lu177_request());
    request.set_timeout(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let status = client
        .evaluate_eligibility_with(request)
        .await
        .expect_err("shed until the caller's deadline");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Shed every 100 ms (RetryInfo) for half a second, not for the client's 10 s deadline.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let shed = s.calls_ended("EvaluateEligibility", "ResourceExhausted");
    assert!((2..=6).contains(&shed), "tried {shed} times in 500 ms");
}

#[tokio::test]
async fn a_call_to_a_name_that_resolves_to_nothing_ends_at_its_deadline() {
    let client = NetPathwayClient::builder("dns:///nothing-here.invalid:50051")
        .deadline(Duration::from_millis(300))
        .connect_lazy()
        .expect("made before the name resolves");
    let status = client
        .get_active_policy(pb::GetActivePolicyRequest::default())
        .await
        .expect_err("no server");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

#[tokio::test]
async fn a_client_that_does_not_retry_reports_the_shed_call() {
    let s = server().await;
    let client = NetPathwayClient::builder(format!("http://{}", s.address))
        .retries(0)
        .connect()
        .await
        .expect("connect");
    let _held = s.hold_every_call_place().await;
    let status = client
        .evaluate_eligibility(lu177_request())
        .await
        .expect_err("shed");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(s.calls_ended("EvaluateEligibility", "ResourceExhausted"), 1);
}

#[tokio::test]
async fn an_evaluation_without_a_request_id_is_given_one_when_it_may_be_repeated() {
    let s = server().await;
    let retrying = NetPathwayClient::connect(format!("http://{}", s.address))
        .await
        .expect("connect");
    let answer = retrying
        .evaluate_eligibility(lu177_request())
        .await
        .expect("answered");
    assert!(
        uuid::Uuid::try_parse(&answer.request_id).is_ok(),
        "request_id {:?}",
        answer.request_id
    );
    let funding = retrying
        .classify_funding(pb::ClassifyFundingRequest {
            patient: Some(Box::new(ta539_small_bowel().england().profile())),
            ..Default::default()
        })
        .await
        .expect("answered");
    assert!(uuid::Uuid::try_parse(&funding.request_id).is_ok());

    let once = NetPathwayClient::builder(format!("http://{}", s.address))
        .retries(0)
        .connect()
        .await
        .expect("connect");
    let answer = once
        .evaluate_eligibility(lu177_request())
        .await
        .expect("answered");
    assert_eq!(
        answer.request_id, "",
        "a client that never repeats a call adds none"
    );
}

#[tokio::test]
async fn the_callers_metadata_goes_out_and_the_trace_id_comes_back() {
    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let s = server().await;
    let mut request = tonic::Request::new(lu177_request());
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-00f067aa0ba902b7-01")
            .parse()
            .expect("header"),
    );
    request.set_timeout(Duration::from_secs(3));
    let answer = s
        .client
        .evaluate_eligibility_with(request)
        .await
        .expect("answered");
    assert_eq!(
        answer
            .metadata()
            .get("x-trace-id")
            .and_then(|v| v.to_str().ok()),
        Some(TRACE_ID)
    );
    assert_eq!(answer.into_inner().therapies.len(), 1);
}
