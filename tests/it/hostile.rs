//! Hostile and ordinary clients against the real binary, over raw HTTP/2 where the attack is in
//! the framing: memory is read from /proc (VmHWM, the peak resident set) against its budget, and
//! a well-behaved caller is answered throughout. README "Limits" describes what is shown here.

use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use net_pathway::pb;
use net_pathway_client::{ClientOptions, NetPathwayClient};
use prost::Message;

/// Resident memory the server may reach under any one attack here (issue "Hostile and ordinary
/// clients"): the release binary idles at about 20 MB.
const MEMORY_BUDGET_MB: u64 = 150;

/// The binary on a free port with `args`, and a client once it is serving.
struct Binary {
    child: std::process::Child,
    port: u16,
    client: NetPathwayClient,
    _data: tempfile::TempDir,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn binary(args: &[&str]) -> Binary {
    let data = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut all: Vec<&std::ffi::OsStr> = Vec::new();
    if !args.contains(&"--admin-listen") {
        all.extend(["--admin-listen", "off"].map(std::ffi::OsStr::new));
    }
    all.extend(args.iter().map(std::ffi::OsStr::new));
    let child = start_binary(port, data.path(), &all, "warn", std::process::Stdio::null());
    // No retries in the client: the well-behaved callers below retry as RetryInfo asks
    // themselves, and count each time they were shed.
    let once = ClientOptions {
        retries: 0,
        ..ClientOptions::default()
    };
    let client = connect_when_serving(port, once).await;
    Binary {
        child,
        port,
        client,
        _data: data,
    }
}

impl Binary {
    /// Peak resident memory of the server process so far, in MB (VmHWM).
    fn peak_memory_mb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status");
        kb / 1024
    }

    fn assert_within_budget(&self, attack: &str) {
        let peak = self.peak_memory_mb();
        eprintln!("{attack}: peak resident memory {peak} MB");
        assert!(
            peak < MEMORY_BUDGET_MB,
            "{attack}: the server reached {peak} MB, over its {MEMORY_BUDGET_MB} MB budget"
        );
    }

    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().expect("process state").is_none(),
            "the server process ended"
        );
    }

    /// A well-behaved caller: health answers SERVING and a unary call is answered OK.
    async fn assert_well_behaved_callers_answered(&self) {
        use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.client.channel());
        let status = tokio::time::timeout(
            Duration::from_secs(10),
            health.check(HealthCheckRequest::default()),
        )
        .await
        .expect("health answered")
        .expect("health OK")
        .into_inner()
        .status();
        assert_eq!(status, ServingStatus::Serving);
        let answer = well_behaved_call(&self.client).await;
        assert!(!answer.therapies.is_empty());
    }

    /// A unary call is answered, not shed.
    async fn assert_answered_at_the_first_attempt(&self) {
        let answer = self
            .client
            .evaluate_eligibility(eligibility_request())
            .await
            .expect("answered at the first attempt");
        assert!(!answer.therapies.is_empty());
    }

    /// A well-behaved ScreenCohort stream of one patient is answered, within 20 s.
    async fn assert_a_one_patient_stream_is_answered(&self) {
        let answers = self
            .client
            .screen_cohort(tokio_stream::iter(vec![screening_request(
                0,
                pb::EvaluationView::Basic,
            )]))
            .await
            .expect("a well-behaved stream opens");
        let answers: Vec<_> = tokio::time::timeout(Duration::from_secs(20), async {
            use tokio_stream::StreamExt;
            answers.collect::<Vec<_>>().await
        })
        .await
        .expect("a well-behaved stream is answered");
        assert_eq!(answers.len(), 1);
        assert!(answers[0].is_ok(), "{answers:?}");
    }

    async fn h2(&self) -> h2::client::SendRequest<Bytes> {
        h2_connect(self.port, 65_535).await
    }
}

/// One eligibility call, retried as RetryInfo asks when the server sheds it.
async fn well_behaved_call(client: &NetPathwayClient) -> pb::EvaluateEligibilityResponse {
    for _ in 0..100 {
        match tokio::time::timeout(
            Duration::from_secs(10),
            client.evaluate_eligibility(eligibility_request()),
        )
        .await
        .expect("a well-behaved call is answered")
        {
            Ok(answer) => return answer,
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("well-behaved call failed: {status:?}"),
        }
    }
    panic!("a well-behaved call was shed 100 times in a row");
}

fn eligibility_request() -> pb::EvaluateEligibilityRequest {
    pb::EvaluateEligibilityRequest {
        patient: Some(Box::new(ta539_small_bowel().profile())),
        as_of_date: Some(date(2026, 6, 1)),
        view: pb::EvaluationView::Basic as i32,
        ..Default::default()
    }
}

/// An HTTP/2 connection with `window` bytes of receive window per stream, never enlarged.
async fn h2_connect(port: u16, window: u32) -> h2::client::SendRequest<Bytes> {
    let (send, connection) = h2_handshake(port, window).await;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

/// An HTTP/2 connection with `window` bytes of receive window per stream, until a window is
/// sent on the returned channel: every stream's window then becomes that (a SETTINGS frame).
async fn h2_connect_widened_later(
    port: u16,
    window: u32,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::sync::oneshot::Sender<u32>,
) {
    let (send, mut connection) = h2_handshake(port, window).await;
    let (widen, widened) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        tokio::select! {
            _ = &mut connection => return,
            Ok(window) = widened => {
                if connection.set_initial_window_size(window).is_err() {
                    return;
                }
            }
        }
        let _ = connection.await;
    });
    (send, widen)
}

async fn h2_handshake(
    port: u16,
    window: u32,
) -> (
    h2::client::SendRequest<Bytes>,
    h2::client::Connection<tokio::net::TcpStream, Bytes>,
) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    h2::client::Builder::new()
        .initial_window_size(window)
        .initial_connection_window_size(window.max(65_535))
        .max_concurrent_reset_streams(10_000)
        // The server's default limit from the first stream: until its SETTINGS frame arrives
        // the client would otherwise open any number, and the server refuses those beyond 100
        // with REFUSED_STREAM.
        .initial_max_send_streams(100)
        .handshake(tcp)
        .await
        .expect("HTTP/2 handshake")
}

fn grpc_request(path: &str, extra: &[(&str, &str)]) -> http::Request<()> {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.body(()).expect("request")
}

/// A gRPC message frame: uncompressed flag, big-endian length, bytes.
fn framed(message: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(message.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(message.len()).expect("length").to_be_bytes());
    frame.extend_from_slice(message);
    frame.into()
}

/// The call's grpc-status and message (from a trailers-only answer or the trailers), reading
/// and releasing any answer data; None for the status when the stream was reset instead.
async fn outcome(
    response: h2::client::ResponseFuture,
) -> Result<(http::StatusCode, Option<i32>, String), h2::Error> {
    let response = response.await?;
    let status = response.status();
    let read = |headers: &http::HeaderMap| {
        let code = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let message = percent_decoded(headers.get("grpc-message"));
        (code, message)
    };
    if let (Some(code), message) = read(response.headers()) {
        return Ok((status, Some(code), message));
    }
    let mut body = response.into_body();
    while let Some(data) = body.data().await {
        let data = data?;
        let _ = body.flow_control().release_capacity(data.len());
    }
    let trailers = body.trailers().await?.unwrap_or_default();
    let (code, message) = read(&trailers);
    Ok((status, code, message))
}

/// A grpc-message header as text: the protocol percent-encodes it.
fn percent_decoded(value: Option<&http::HeaderValue>) -> String {
    let bytes = value.map(http::HeaderValue::as_bytes).unwrap_or_default();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends one request (its body in `chunks`, each a DATA frame) and waits for its outcome.
async fn call_raw(
    send: &mut h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
    chunks: Vec<Bytes>,
) -> Result<(http::StatusCode, Option<i32>, String), h2::Error> {
    let mut ready = send.clone().ready().await?;
    let (response, mut body) = ready.send_request(request, chunks.is_empty())?;
    let count = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        if body.send_data(chunk, i + 1 == count).is_err() {
            break;
        }
    }
    outcome(response).await
}

const ELIGIBILITY: &str = "/netpathway.v1.EligibilityService/EvaluateEligibility";
const SCREENING: &str = "/netpathway.v1.ScreeningService/ScreenCohort";

/// Unauthenticated callers posting 1 MB bodies are refused from their headers: the server never
/// reads the bodies, stays within its memory budget, and answers a caller with a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_floods_of_megabyte_bodies_cost_almost_nothing() {
    let keys = tempfile::tempdir().expect("temp dir");
    let idp = jwt::IdentityProvider::new("hostile-test");
    let jwks = jwt::IdentityProvider::jwks_file(keys.path(), &[&idp]);
    let jwks = jwks.to_str().expect("path");
    let mut server = binary(&[
        "--jwks-file",
        jwks,
        "--jwt-issuer",
        jwt::ISSUER,
        "--jwt-audience",
        jwt::AUDIENCE,
    ])
    .await;
    let body = framed(&vec![0x0a; 1024 * 1024 - 5]);
    let mut floods = Vec::new();
    for _ in 0..4 {
        let send = server.h2().await;
        let body = body.clone();
        floods.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut calls = Vec::new();
            for _ in 0..250 {
                let mut send = send.clone();
                let body = body.clone();
                calls.push(tokio::spawn(async move {
                    call_raw(&mut send, grpc_request(ELIGIBILITY, &[]), vec![body]).await
                }));
            }
            for call in calls {
                outcomes.push(match call.await.expect("task") {
                    Ok((_, Some(16), _)) => "UNAUTHENTICATED".to_string(),
                    other => format!("{other:?}"),
                });
            }
            outcomes
        }));
    }
    let token = idp.token("mdt-workflow", &["evaluate"]);
    let caller = server.client.with_bearer_token(&token).expect("token");
    let answer = well_behaved_call(&caller).await;
    assert!(!answer.therapies.is_empty());
    let mut outcomes = std::collections::BTreeMap::new();
    for flood in floods {
        for outcome in flood.await.expect("flood") {
            *outcomes.entry(outcome).or_insert(0) += 1;
        }
    }
    assert_eq!(
        outcomes.get("UNAUTHENTICATED"),
        Some(&1000),
        "every unauthenticated call is UNAUTHENTICATED: {outcomes:?}"
    );
    server.assert_alive();
    server.assert_within_budget("1,000 unauthenticated 1 MB requests");
    let answer = well_behaved_call(&caller).await;
    assert!(!answer.therapies.is_empty());
}

/// 2,000 streams at once over 20 connections, half of them FULL-view calls about every therapy
/// (the largest answers) and half announcing a 1 MB message: each is answered (OK, shed with
/// RESOURCE_EXHAUSTED, or the large ones OUT_OF_RANGE from their length prefix), memory stays
/// within budget, and health and a unary call are answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_streams_hold_bounded_memory() {
    let mut server = binary(&[]).await;
    let full = pb::EvaluateEligibilityRequest {
        view: pb::EvaluationView::Full as i32,
        ..eligibility_request()
    };
    let valid = framed(&full.encode_to_vec());
    let large = framed(&vec![0x0a; 1024 * 1024 - 5]);
    let mut connections = Vec::new();
    for c in 0..20 {
        let send = server.h2().await;
        let (valid, large) = (valid.clone(), large.clone());
        connections.push(tokio::spawn(async move {
            let mut calls = Vec::new();
            for s in 0..100 {
                let mut send = send.clone();
                let body = if (c + s) % 2 == 0 {
                    valid.clone()
                } else {
                    large.clone()
                };
                calls.push(tokio::spawn(async move {
                    call_raw(&mut send, grpc_request(ELIGIBILITY, &[]), vec![body]).await
                }));
            }
            let mut codes = Vec::new();
            for call in calls {
                codes.push(match call.await.expect("task") {
                    Ok((_, code, _)) => code,
                    Err(e) => panic!("stream failed: {e}"),
                });
            }
            codes
        }));
    }
    server.assert_well_behaved_callers_answered().await;
    let mut codes = std::collections::BTreeMap::new();
    for connection in connections {
        for code in connection.await.expect("connection") {
            *codes.entry(code).or_insert(0) += 1;
        }
    }
    eprintln!("2,000 streams: {codes:?}");
    // OK, OUT_OF_RANGE (the 1 MB messages), RESOURCE_EXHAUSTED (shed).
    assert!(
        codes.keys().all(|c| matches!(c, Some(0 | 8 | 11))),
        "{codes:?}"
    );
    assert_eq!(codes.values().sum::<i32>(), 2000);
    assert!(codes.get(&Some(0)).copied().unwrap_or(0) > 0, "{codes:?}");
    server.assert_alive();
    server.assert_within_budget("2,000 concurrent streams");
    server.assert_well_behaved_callers_answered().await;
}

/// The last eighth of the calls in progress is kept for connections holding few calls. With a
/// limit of 64, a connection opening 100 streams (and never ending them) is given 56 and refused
/// the rest with RESOURCE_EXHAUSTED saying why; a newcomer's stream and a well-behaved unary call
/// on a third connection are then each admitted at their first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_leaves_the_last_places_to_connections_with_few_calls() {
    let server = binary(&["--max-concurrent-calls", "64"]).await;
    let open_stream = |send: h2::client::SendRequest<Bytes>| async move {
        let mut ready = send.ready().await.expect("stream capacity");
        let (response, body) = ready
            .send_request(grpc_request(SCREENING, &[]), false)
            .expect("open stream");
        (response.await.expect("answered"), body)
    };
    let greedy = server.h2().await;
    let mut held = Vec::new();
    let mut refusals = Vec::new();
    for _ in 0..100 {
        let (head, stream) = open_stream(greedy.clone()).await;
        match head.headers().get("grpc-status") {
            None => held.push((head, stream)),
            Some(code) => {
                assert_eq!(code, "8", "{head:?}");
                refusals.push(percent_decoded(head.headers().get("grpc-message")));
            }
        }
    }
    assert_eq!(held.len(), 56, "all but the reserve of 8");
    assert!(
        refusals[0].contains("the last 8 are kept for connections with fewer than 8 that wait as RetryInfo asks; this connection has 56"),
        "{}",
        refusals[0]
    );
    let newcomer = server.h2().await;
    let (head, _newcomer_stream) = open_stream(newcomer).await;
    assert!(head.headers().get("grpc-status").is_none(), "{head:?}");
    server.assert_answered_at_the_first_attempt().await;
}

/// Sends one eligibility call and waits for its answer's headers, leaving its answer unread: the
/// call was admitted and decided, not refused.
async fn answered_unread(
    send: &h2::client::SendRequest<Bytes>,
    request: &Bytes,
) -> http::Response<h2::RecvStream> {
    let mut ready = send.clone().ready().await.expect("stream capacity");
    let (response, mut body) = ready
        .send_request(grpc_request(ELIGIBILITY, &[]), false)
        .expect("send");
    body.send_data(request.clone(), true).expect("request");
    let head = response.await.expect("answer's headers");
    assert_eq!(head.headers().get("grpc-status"), None, "{head:?}");
    head
}

/// A unary answer its caller never reads holds its call's place only for
/// --unread-answer-seconds. With a limit of 8 calls, one connection that never reads takes all
/// 8 (each call gets its answer's headers, none is refused); a well-behaved call, retrying as
/// RetryInfo asks, is answered once those answers are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_answers_nobody_reads_give_their_places_back() {
    let server = binary(&[
        "--max-concurrent-calls",
        "8",
        "--unread-answer-seconds",
        "1",
    ])
    .await;
    let send = h2_connect(server.port, 0).await;
    let request = framed(&eligibility_request().encode_to_vec());
    let mut unread = Vec::new();
    for _ in 0..8 {
        unread.push(answered_unread(&send, &request).await);
    }
    let shed = server
        .client
        .evaluate_eligibility(eligibility_request())
        .await
        .expect_err("every place is held by an unread answer");
    assert_eq!(shed.code(), tonic::Code::ResourceExhausted, "{shed:?}");
    let answer = well_behaved_call(&server.client).await;
    assert!(!answer.therapies.is_empty());
    drop(unread);
}

/// A FULL answer its caller does not read keeps its place among the FULL answers only for
/// --unread-answer-seconds. With 2 places held by answers nobody reads, a FULL call beside them
/// is answered once they are dropped; when the callers who did not read widen their window,
/// each hears DEADLINE_EXCEEDED saying what happened, and the drops are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_answers_nobody_reads_give_their_places_back() {
    let admin = free_port();
    let admin_address = format!("127.0.0.1:{admin}");
    let server = binary(&[
        "--max-full-answers",
        "2",
        "--unread-answer-seconds",
        "1",
        "--admin-listen",
        &admin_address,
    ])
    .await;
    let full = pb::EvaluateEligibilityRequest {
        view: pb::EvaluationView::Full as i32,
        ..eligibility_request()
    };
    let (send, widen) = h2_connect_widened_later(server.port, 0).await;
    let mut unread = Vec::new();
    let request = framed(&full.encode_to_vec());
    for _ in 0..2 {
        unread.push(answered_unread(&send, &request).await);
    }
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        server.client.evaluate_eligibility(full),
    )
    .await
    .expect("answered")
    .expect("a place was given back");
    assert!(!answer.therapies[0].criteria.is_empty(), "FULL explains");
    // Each answer is dropped a second after it was ready.
    until_metric_reaches(admin, "netpathway_unread_answers_dropped_total", 2).await;
    widen.send(65_535).expect("widen");
    for head in unread {
        let mut body = head.into_body();
        while let Some(data) = body.data().await {
            let data = data.expect("data");
            let _ = body.flow_control().release_capacity(data.len());
        }
        let trailers = body.trailers().await.expect("trailers").unwrap_or_default();
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"4"[..]),
            "{trailers:?}"
        );
        assert!(
            percent_decoded(trailers.get("grpc-message")).contains(
                "the caller took none of the answer for 1 s, so it was dropped; anything the call recorded stays recorded"
            ),
            "{trailers:?}"
        );
    }
}

/// 2,000 FULL calls over 20 connections that never read their answers (each about 100 KB):
/// memory stays within budget, health and a unary call are answered meanwhile, and a
/// well-behaved FULL call is answered once it retries as RetryInfo asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_full_calls_that_never_read() {
    let mut server = binary(&["--unread-answer-seconds", "1"]).await;
    let full = pb::EvaluateEligibilityRequest {
        view: pb::EvaluationView::Full as i32,
        ..eligibility_request()
    };
    let request = framed(&full.encode_to_vec());
    let mut flood = Vec::new();
    for _ in 0..20 {
        let send = h2_connect(server.port, 0).await;
        for _ in 0..100 {
            let mut ready = send.clone().ready().await.expect("stream capacity");
            let (response, mut body) = ready
                .send_request(grpc_request(ELIGIBILITY, &[]), false)
                .expect("send");
            body.send_data(request.clone(), true).expect("request");
            flood.push(response);
        }
    }
    server.assert_well_behaved_callers_answered().await;
    let mut shed = 0;
    let answer = loop {
        match tokio::time::timeout(
            Duration::from_secs(20),
            server.client.evaluate_eligibility(full.clone()),
        )
        .await
        .expect("a FULL call is answered")
        {
            Ok(answer) => break answer,
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                shed += 1;
                assert!(shed < 200, "a FULL call was shed {shed} times: {status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("FULL call failed: {status:?}"),
        }
    };
    eprintln!("2,000 FULL calls that never read: a FULL call shed {shed} times first");
    assert!(!answer.therapies[0].criteria.is_empty(), "FULL explains");
    server.assert_alive();
    server.assert_within_budget("2,000 FULL calls that never read");
    drop(flood);
}

/// Requests as large as allowed, each with tens of thousands of problems, get one short error
/// apiece; 16 at once stay within the memory budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_violation_lists_stay_small() {
    let server = binary(&[]).await;
    let mut patient = ta539_small_bowel().profile();
    patient.prior_treatments = vec![pb::PriorTreatment::default(); 30_000];
    let message = pb::EvaluateEligibilityRequest {
        patient: Some(Box::new(patient)),
        ..Default::default()
    }
    .encode_to_vec();
    assert!(message.len() < 64 * 1024, "{} bytes", message.len());
    let body = framed(&message);
    let mut calls = Vec::new();
    for _ in 0..16 {
        let mut send = server.h2().await;
        let body = body.clone();
        calls.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..4 {
                results.push(
                    call_raw(
                        &mut send,
                        grpc_request(ELIGIBILITY, &[]),
                        vec![body.clone()],
                    )
                    .await,
                );
            }
            results
        }));
    }
    for call in calls {
        for result in call.await.expect("task") {
            let (_, code, message) = result.expect("answered");
            assert_eq!(code, Some(3), "{message}");
            assert!(message.len() < 1024, "{message}");
        }
    }
    server.assert_within_budget("64 requests of 30,000 problems each");
    server.assert_well_behaved_callers_answered().await;
}

/// A ScreenCohort stream of `patients` (FULL or BASIC), opened on `send` and never read: the
/// client's window is never given back. The request stream stays open.
async fn screen_without_reading(
    send: &h2::client::SendRequest<Bytes>,
    patients: usize,
    view: pb::EvaluationView,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let mut ready = send.clone().ready().await.expect("stream capacity");
    let (response, mut body) = ready
        .send_request(grpc_request(SCREENING, &[]), false)
        .expect("open stream");
    let mut frames = Vec::new();
    for i in 0..patients {
        frames.extend_from_slice(&framed(&screening_request(i, view).encode_to_vec()));
    }
    body.send_data(frames.into(), false).expect("send patients");
    (response, body)
}

fn screening_request(i: usize, view: pb::EvaluationView) -> pb::ScreenCohortRequest {
    pb::ScreenCohortRequest {
        correlation_id: format!("p{i}"),
        patient: Some(Box::new(ta539_small_bowel().profile())),
        as_of_date: Some(date(2026, 6, 1)),
        view: view as i32,
        ..Default::default()
    }
}

/// Waits until no patient is being decided: the streams that do not read have stopped.
async fn until_screening_settles(port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        let metrics = scrape_metrics(([127, 0, 0, 1], port).into()).await;
        let in_progress = metrics
            .lines()
            .find(|l| l.starts_with("netpathway_screening_patients_in_progress "))
            .unwrap_or_default()
            .to_string();
        let decided = metrics
            .lines()
            .filter(|l| l.starts_with("netpathway_calls_total"))
            .collect::<Vec<_>>()
            .join("\n");
        let now = format!("{in_progress}\n{decided}");
        if in_progress.ends_with(" 0") && now == last {
            eprintln!(
                "SETTLED {}",
                metrics
                    .lines()
                    .filter(|l| !l.starts_with("#")
                        && (l.contains("screen")
                            || l.contains("decision_log")
                            || l.contains("resident")))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            return;
        }
        last = now;
        assert!(
            std::time::Instant::now() < deadline,
            "screening never settled: {last}"
        );
        // Polled: the streams stop on their own once their answers fill what they may hold.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// 500 streams that never read their answers hold only their own answers: memory stays within
/// budget, no screening place is held, and a well-behaved stream and a unary call are answered
/// beside them. BASIC answers; FULL ones, the largest, in the next test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_streams_that_never_read() {
    streams_that_never_read(500, pb::EvaluationView::Basic).await;
}

/// 500 FULL-view streams that never read (each answer about 100 KB on the wire) stay within the
/// budget: a stream decides a patient only when its caller has room for the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_full_view_streams_that_never_read() {
    streams_that_never_read(500, pb::EvaluationView::Full).await;
}

async fn streams_that_never_read(count: usize, view: pb::EvaluationView) {
    let admin = free_port();
    let admin_address = format!("127.0.0.1:{admin}");
    // Room for every stream: five connections of 100 would otherwise stop at seven eighths of
    // the default 512, and an attacker spreading its streams over light connections gets all.
    let mut server = binary(&[
        "--admin-listen",
        &admin_address,
        "--max-concurrent-calls",
        "1024",
    ])
    .await;
    let mut held = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..count.div_ceil(100) {
        let send = server.h2().await;
        for _ in 0..100.min(count - streams.len()) {
            streams.push(screen_without_reading(&send, 200, view).await);
        }
        held.push(send);
    }
    until_screening_settles(admin).await;
    server.assert_alive();
    server.assert_within_budget(&format!("{count} {view:?} streams that never read"));
    server.assert_a_one_patient_stream_is_answered().await;
    server.assert_well_behaved_callers_answered().await;
    drop((held, streams));
}

/// Eight streams that stop reading their answers keep no screening place: with places for only
/// 16 patients, a well-behaved one-patient stream beside them is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_leave_the_screening_places_to_others() {
    let admin = free_port();
    let admin_address = format!("127.0.0.1:{admin}");
    let server = binary(&[
        "--admin-listen",
        &admin_address,
        "--max-screening-patients",
        "16",
        "--screening-window",
        "8",
    ])
    .await;
    let send = server.h2().await;
    let mut streams = Vec::new();
    for _ in 0..8 {
        streams.push(screen_without_reading(&send, 400, pb::EvaluationView::Basic).await);
    }
    until_screening_settles(admin).await;
    server.assert_a_one_patient_stream_is_answered().await;
    drop(streams);
}

/// A caller who stops reading and then cancels its streams leaves nothing behind: each stream's
/// work ends, counted as a CANCELLED ScreenCohort call, though its next patient was waiting for
/// the caller to make room (one FULL answer fills a stream's window) and none was unsent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_cancelled_while_they_wait_for_their_caller_end() {
    const STREAMS: usize = 8;
    let admin = free_port();
    let admin_address = format!("127.0.0.1:{admin}");
    let server = binary(&["--admin-listen", &admin_address]).await;
    let send = server.h2().await;
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        streams.push(screen_without_reading(&send, 5, pb::EvaluationView::Full).await);
    }
    until_screening_settles(admin).await;
    for (_, body) in &mut streams {
        body.send_reset(h2::Reason::CANCEL);
    }
    // The server notices each reset as its stream's answers are dropped.
    until_metric_reaches(
        admin,
        "netpathway_calls_total{code=\"Cancelled\",method=\"ScreenCohort\"}",
        STREAMS,
    )
    .await;
    drop((send, streams));
}

/// Polls the admin port's metrics until the series `series` reads `value`, for up to 20 s.
async fn until_metric_reaches(admin: u16, series: &str, value: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = scrape_metrics(([127, 0, 0, 1], admin).into()).await;
        let now = metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if now == value {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} is {now}, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Most gRPC libraries other than tonic send each message as its own small DATA frame, some
/// with the 5-byte prefix in a frame of its own. Four such streams of small patients on one
/// connection, with unary calls beside them, are all answered to the end: the connection is
/// never closed for "too many data frames".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_of_small_data_frames_are_answered_to_the_end() {
    const PATIENTS: usize = 2500;
    let server = binary(&[]).await;
    let send = server.h2().await;
    let minimal = |i: usize| pb::ScreenCohortRequest {
        correlation_id: format!("p{i}"),
        patient: Some(Box::new(Patient::new().aged(60).profile())),
        view: pb::EvaluationView::Basic as i32,
        therapies: vec![pb::Therapy::PrrtLu177Dotatate as i32],
        ..Default::default()
    };
    assert!(minimal(PATIENTS).encoded_len() < 64);
    let mut streams = Vec::new();
    for _ in 0..4 {
        let mut ready = send.clone().ready().await.expect("ready");
        let (response, mut body) = ready
            .send_request(grpc_request(SCREENING, &[]), false)
            .expect("open stream");
        let writer = tokio::spawn(async move {
            for i in 0..PATIENTS {
                let message = minimal(i).encode_to_vec();
                let frame = framed(&message);
                // The prefix and the message as two DATA frames, each waiting for window.
                for part in [frame.slice(..5), frame.slice(5..)] {
                    body.reserve_capacity(part.len());
                    while body.capacity() < part.len() {
                        match std::future::poll_fn(|cx| body.poll_capacity(cx)).await {
                            Some(Ok(_)) => {}
                            other => panic!("stream closed while sending: {other:?}"),
                        }
                    }
                    body.send_data(part, false).expect("send");
                }
            }
            body.send_data(Bytes::new(), true).expect("end");
        });
        streams.push((writer, tokio::spawn(count_answers(response))));
    }
    for _ in 0..20 {
        let mut send = send.clone();
        let (_, code, message) = call_raw(
            &mut send,
            grpc_request(ELIGIBILITY, &[]),
            vec![framed(&eligibility_request().encode_to_vec())],
        )
        .await
        .expect("a unary call beside the streams");
        assert_eq!(code, Some(0), "{message}");
    }
    for (writer, answers) in streams {
        writer.await.expect("writer");
        let (answers, code, message) = answers.await.expect("reader");
        assert_eq!((answers, code), (PATIENTS, Some(0)), "{message}");
    }
}

/// Reads a screening stream to its end: answers counted, and the stream's status.
async fn count_answers(response: h2::client::ResponseFuture) -> (usize, Option<i32>, String) {
    let response = response.await.expect("stream answered");
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    let mut answers = 0;
    while let Some(data) = body.data().await {
        let data = data.expect("answer data");
        let _ = body.flow_control().release_capacity(data.len());
        bytes.extend_from_slice(&data);
        while bytes.len() >= 5 {
            let length = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
            if bytes.len() < 5 + length {
                break;
            }
            bytes.drain(..5 + length);
            answers += 1;
        }
    }
    let trailers = body.trailers().await.expect("trailers").unwrap_or_default();
    let code = trailers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let message = percent_decoded(trailers.get("grpc-message"));
    (answers, code, message)
}

/// On SIGTERM an open stream takes no more patients: it ends at once, after answering the
/// patients it had started, with UNAVAILABLE saying the server is shutting down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_with_a_status_that_says_so() {
    let server = binary(&["--drain-seconds", "30"]).await;
    let (patients, requests) = tokio::sync::mpsc::channel(64);
    let feeder = tokio::spawn(async move {
        for i in 0.. {
            if patients
                .send(screening_request(i, pb::EvaluationView::Basic))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut answers = server
        .client
        .screen_cohort(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await
        .expect("stream opens");
    use tokio_stream::StreamExt;
    for _ in 0..200 {
        let answer = answers.next().await.expect("an answer").expect("answered");
        assert!(answer.result.is_some());
    }
    send_signal(&server.child, "TERM");
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        let mut after = 0usize;
        while let Some(answer) = answers.next().await {
            match answer {
                Ok(_) => after += 1,
                Err(status) => return (after, status),
            }
        }
        panic!("the stream ended without a status after {after} answers");
    })
    .await
    .expect("the stream ends promptly on SIGTERM");
    let (after, status) = ended;
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    // The caller kept sending: a stream that kept reading would answer until the 30-second
    // drain ended. The answers after the signal are those decided before it, still on their
    // way (how many depends on the machine's speed), and the few started as it arrived.
    eprintln!("{after} answers after SIGTERM");
    feeder.abort();
}

/// A request that is not gRPC is refused with HTTP 415, as the gRPC protocol asks, without
/// reaching a service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_are_not_grpc_get_415() {
    let server = binary(&[]).await;
    let body = framed(&eligibility_request().encode_to_vec());
    for content_type in [None, Some("application/json"), Some("application/grpc-web")] {
        let mut send = server.h2().await;
        let mut request = http::Request::builder()
            .method("POST")
            .uri(format!("http://127.0.0.1{ELIGIBILITY}"))
            .header("te", "trailers");
        if let Some(value) = content_type {
            request = request.header("content-type", value);
        }
        let (status, code, _) = call_raw(
            &mut send,
            request.body(()).expect("request"),
            vec![body.clone()],
        )
        .await
        .expect("answered");
        assert_eq!(
            status,
            http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert_eq!(code, None, "{content_type:?}");
    }
}

/// A unary call carries one request message; a second one is INVALID_ARGUMENT, not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_with_two_messages_is_invalid_argument() {
    let server = binary(&[]).await;
    let message = framed(&eligibility_request().encode_to_vec());
    let mut send = server.h2().await;
    let (_, code, text) = call_raw(
        &mut send,
        grpc_request(ELIGIBILITY, &[]),
        vec![message.clone(), message.clone()],
    )
    .await
    .expect("answered");
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("one request message"), "{text}");
    let (_, code, text) = call_raw(&mut send, grpc_request(ELIGIBILITY, &[]), vec![message])
        .await
        .expect("answered");
    assert_eq!(code, Some(0), "{text}");
}

/// How a generated request is broken.
#[derive(Debug, Clone)]
enum Malformed {
    /// Bytes that do not parse as the RPC's request message.
    Message(Vec<u8>),
    /// A valid message whose length prefix says more bytes than are sent.
    ShortFrame(u32),
    /// The compressed flag set with no grpc-encoding.
    CompressedWithoutEncoding,
    /// A grpc-encoding the server does not accept.
    Encoding(String),
    /// A grpc-timeout that is not one.
    Timeout(String),
    /// A body that ends inside the 5-byte prefix.
    TruncatedPrefix(usize),
}

fn malformed() -> impl proptest::strategy::Strategy<Value = Malformed> {
    use proptest::prelude::*;
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..512)
            .prop_filter("does not parse", |b| {
                pb::EvaluateEligibilityRequest::decode(b.as_slice()).is_err()
            })
            .prop_map(Malformed::Message),
        (1u32..100_000).prop_map(Malformed::ShortFrame),
        Just(Malformed::CompressedWithoutEncoding),
        "[a-z]{1,12}"
            .prop_filter("not accepted", |e| !["gzip", "zstd", "identity"]
                .contains(&e.as_str()))
            .prop_map(Malformed::Encoding),
        "[0-9A-Za-z]{0,12}"
            .prop_filter("not a timeout", |t| {
                !(t.len() >= 2
                    && t.len() <= 9
                    && t[..t.len() - 1].bytes().all(|b| b.is_ascii_digit())
                    && "HMSmun".contains(&t[t.len() - 1..]))
            })
            .prop_map(Malformed::Timeout),
        (1usize..5).prop_map(Malformed::TruncatedPrefix),
    ]
}

/// A generated corpus of malformed requests, over the socket: every one is answered with an
/// error status (never OK), within seconds, and the server stays up.
#[test]
fn malformed_requests_are_refused_and_never_crash_the_server() {
    use proptest::test_runner::{Config, TestRunner};
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut server = runtime.block_on(binary(&[]));
    let send = runtime.block_on(server.h2());
    let valid = eligibility_request().encode_to_vec();
    let mut runner = TestRunner::new(Config::with_cases(128));
    runner
        .run(&malformed(), |case| {
            let mut extra: Vec<(&str, String)> = Vec::new();
            let body: Bytes = match &case {
                Malformed::Message(bytes) => framed(bytes),
                Malformed::ShortFrame(missing) => {
                    let mut frame = framed(&valid).to_vec();
                    let declared = valid.len() as u32 + missing;
                    frame[1..5].copy_from_slice(&declared.to_be_bytes());
                    frame.into()
                }
                Malformed::CompressedWithoutEncoding => {
                    let mut frame = framed(&valid).to_vec();
                    frame[0] = 1;
                    frame.into()
                }
                Malformed::Encoding(name) => {
                    extra.push(("grpc-encoding", name.clone()));
                    let mut frame = framed(&valid).to_vec();
                    frame[0] = 1;
                    frame.into()
                }
                Malformed::Timeout(value) => {
                    extra.push(("grpc-timeout", value.clone()));
                    framed(&valid)
                }
                Malformed::TruncatedPrefix(n) => framed(&valid).slice(..*n),
            };
            let headers: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut send = send.clone();
            let request = grpc_request(ELIGIBILITY, &headers);
            let answered = runtime.block_on(async move {
                tokio::time::timeout(
                    Duration::from_secs(10),
                    call_raw(&mut send, request, vec![body]),
                )
                .await
            });
            let (_, code, message) = answered
                .map_err(|_| proptest::test_runner::TestCaseError::fail("no answer in 10 s"))?
                .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}")))?;
            match (&case, code) {
                // An unparseable timeout is ignored (the server's own limit applies), as gRPC
                // servers do: the call itself is well-formed.
                (Malformed::Timeout(_), Some(0)) => {}
                (_, Some(0) | None) => {
                    return Err(proptest::test_runner::TestCaseError::fail(format!(
                        "{case:?} answered {code:?} {message}"
                    )));
                }
                _ => {}
            }
            Ok(())
        })
        .expect("every malformed request refused");
    server.assert_alive();
    runtime.block_on(server.assert_well_behaved_callers_answered());
}

/// The ErrorInfo reason an answer's status carries (trailers-only, or in its trailers), read
/// from the raw headers as a caller in any language reads it; asserts the service's domain.
async fn raw_reason(response: h2::client::ResponseFuture) -> (Option<i32>, String) {
    let response = response.await.expect("answered");
    let mut headers = response.headers().clone();
    if !headers.contains_key("grpc-status") {
        let mut body = response.into_body();
        while let Some(data) = body.data().await {
            let data = data.expect("data");
            let _ = body.flow_control().release_capacity(data.len());
        }
        headers = body.trailers().await.expect("trailers").unwrap_or_default();
    }
    let status = tonic::Status::from_header_map(&headers).expect("a grpc-status");
    (Some(status.code() as i32), reason(&status))
}

/// Errors raised by the gRPC library below the service (a unary call with no message), and
/// by the service's own framing rules, carry ErrorInfo with the service's domain like every
/// other error, so a caller never meets a bare status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_below_the_handlers_carry_error_info_too() {
    let server = binary(&[]).await;
    let message = framed(&eligibility_request().encode_to_vec());
    let cases: [(&str, &str, Vec<Bytes>, i32, &str); 4] = [
        ("no message", ELIGIBILITY, vec![], 13, "TRANSPORT"),
        (
            "two messages",
            ELIGIBILITY,
            vec![message.clone(), message.clone()],
            3,
            "MORE_THAN_ONE_MESSAGE",
        ),
        (
            "a message that does not parse",
            ELIGIBILITY,
            vec![framed(&[0xff, 0xff, 0xff])],
            3,
            "MALFORMED_REQUEST",
        ),
        (
            "a method the service lacks",
            "/netpathway.v1.EligibilityService/Nope",
            vec![message],
            12,
            "NOT_AN_RPC",
        ),
    ];
    for (what, path, chunks, code, expected) in cases {
        let mut ready = server.h2().await.ready().await.expect("ready");
        let (response, mut body) = ready
            .send_request(grpc_request(path, &[]), false)
            .expect("sent");
        let count = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            body.send_data(chunk, i + 1 == count).expect("data");
        }
        if count == 0 {
            body.send_data(Bytes::new(), true).expect("end");
        }
        assert_eq!(
            raw_reason(response).await,
            (Some(code), expected.to_string()),
            "{what}"
        );
    }
}
