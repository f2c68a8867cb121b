//! What the real binary logs about a call: every line of the call carries its trace id and
//! decision id, and no line carries the patient's NHS number, clinical values or the token.

use std::ffi::OsStr;
use std::io::Read;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::common::jwt::{self, IdentityProvider};
use crate::common::*;
use net_pathway::pb;
use net_pathway::pb::eligibility_service_client::EligibilityServiceClient;
use net_pathway_client::ClientOptions;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const NHS_NUMBER: &str = "9434765919";

#[tokio::test]
async fn every_line_of_a_call_carries_its_trace_and_decision_ids_and_no_patient_data() {
    let dir = tempfile::tempdir().expect("dir");
    let idp = IdentityProvider::new("hospital-idp-2026");
    let jwks = IdentityProvider::jwks_file(dir.path(), &[&idp]);
    let port = free_port();
    let mut server = start_logging_json(
        dir.path(),
        port,
        "127.0.0.1:0",
        &[
            "--jwt-issuer".as_ref(),
            jwt::ISSUER.as_ref(),
            "--jwt-audience".as_ref(),
            jwt::AUDIENCE.as_ref(),
            "--jwks-file".as_ref(),
            jwks.as_os_str(),
        ],
    );

    let token = idp.token("mdt-workflow", &["evaluate"]);
    let options = ClientOptions {
        bearer_token: Some(token.clone()),
        ..ClientOptions::default()
    };
    let client = connect_when_serving(port, options).await;

    // A referral that names the patient and carries clinical values, with the caller's trace.
    let mut patient = ta539_small_bowel().england().ki67(13.7).profile();
    patient.identifiers = Some(pb::PatientIdentifiers {
        nhs_number: NHS_NUMBER.into(),
        ..Default::default()
    });
    let mut request = tonic::Request::new(pb::EvaluateEligibilityRequest {
        patient: Some(Box::new(patient)),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-00f067aa0ba902b7-01")
            .parse()
            .expect("header"),
    );
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let answer = EligibilityServiceClient::new(client.channel())
        .evaluate_eligibility(request)
        .await
        .expect("answered");
    assert_eq!(
        answer
            .metadata()
            .get("x-trace-id")
            .and_then(|v| v.to_str().ok()),
        Some(TRACE_ID),
        "the caller's trace id comes back"
    );
    let decision_id = answer.into_inner().decision_id;

    // A refused call is logged with its own trace id too.
    let refused = client
        .with_bearer_token("not.a.jwt")
        .expect("token")
        .evaluate_eligibility(pb::EvaluateEligibilityRequest::default())
        .await
        .expect_err("bad token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused.metadata().get("x-trace-id").is_some(),
        "a refusal tells its trace id too: {refused:?}"
    );

    // Stopped the way an orchestrator stops it: lines still queued for the log writer are
    // written before the process exits.
    send_signal(&server, "TERM");
    let (logs, lines) = lines_until_exit(&mut server).await;
    let of_call: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["span"]["trace_id"] == TRACE_ID)
        .collect();
    assert!(!of_call.is_empty(), "the call logged nothing: {logs}");
    assert!(
        lines.last().is_some_and(|l| l["message"] == "stopped"),
        "the last line written is the server stopping: {logs}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "serving gRPC" && l["build"] == net_pathway::SERVICE_BUILD),
        "the start names the build its answers name: {logs}"
    );
    for line in &of_call {
        assert_eq!(line["span"]["decision_id"], decision_id.as_str(), "{line}");
        assert_eq!(line["span"]["caller"], "mdt-workflow", "{line}");
        assert_eq!(line["span"]["method"], "EvaluateEligibility", "{line}");
        // Log shippers filter on the target (the module that wrote the line).
        assert!(
            line["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("net_pathway")),
            "{line}"
        );
    }
    assert!(
        of_call.iter().any(|l| l["message"] == "call finished"),
        "{logs}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "call refused" && l["span"]["trace_id"].is_string()),
        "the refused call is logged with a trace id: {logs}"
    );
    for forbidden in [
        NHS_NUMBER,
        "943 476 5919",
        "13.7",
        token.as_str(),
        "not.a.jwt",
    ] {
        assert!(
            !logs.contains(forbidden),
            "the logs contain '{forbidden}': {logs}"
        );
    }
}

#[tokio::test]
async fn a_caller_who_gives_up_is_logged_as_cancelled_and_its_decision_outlives_a_shutdown() {
    // The MDT workflow asks about a small-bowel NET, then gives up waiting: another writer
    // holds the decision log, so the decision is made but not yet recorded. Operators must see
    // the give-up (a `call cancelled` line, a CANCELLED count) rather than lose the call from
    // both, and the decision must be recorded even though the server is stopped before the
    // log is free.
    let dir = tempfile::tempdir().expect("dir");
    let (port, admin_port) = (free_port(), free_port());
    let mut server = start_logging_json(dir.path(), port, &format!("127.0.0.1:{admin_port}"), &[]);
    let client = connect_when_serving(port, ClientOptions::default()).await;

    let database = format!("sqlite://{}", dir.path().join("net-pathway.db").display());
    let mut other_writer = <sqlx::SqliteConnection as sqlx::Connection>::connect(&database)
        .await
        .expect("open the decision log");
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other_writer)
        .await
        .expect("hold the decision log");
    let asking = client.evaluate_eligibility(pb::EvaluateEligibilityRequest {
        patient: Some(Box::new(ta539_small_bowel().england().profile())),
        ..Default::default()
    });
    // Not a timing assertion: the call cannot answer while the log is held (the writer waits
    // up to 10 s for it), so the caller's give-up always comes first.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), asking)
            .await
            .is_err(),
        "no answer while the decision log is held"
    );

    // The server learns of the give-up from the stream's reset, a moment after the caller.
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin_port));
    let counted = r#"netpathway_calls_total{code="Cancelled",method="EvaluateEligibility"} 1"#;
    let mut metrics = scrape_metrics(admin).await;
    for _ in 0..100 {
        if metrics.contains(counted) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        metrics = scrape_metrics(admin).await;
    }
    assert!(metrics.contains(counted), "{metrics}");
    assert!(
        metrics.contains("netpathway_decision_log_committed_records_total 0"),
        "the decision waits for the log: {metrics}"
    );

    // Stopped while the decision still waits: no call is in flight, so the drain is over at
    // once, and the log is freed only once the server has stopped listening.
    send_signal(&server, "TERM");
    let listening = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&listening).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        tokio::net::TcpStream::connect(&listening).await.is_err(),
        "the server stopped listening"
    );
    sqlx::query("ROLLBACK")
        .execute(&mut other_writer)
        .await
        .expect("free the decision log");

    let (logs, lines) = lines_until_exit(&mut server).await;
    let cancelled: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "call cancelled")
        .collect();
    assert_eq!(cancelled.len(), 1, "{logs}");
    let line = cancelled[0];
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["code"], "Cancelled", "{line}");
    assert_eq!(line["span"]["method"], "EvaluateEligibility", "{line}");
    assert!(
        !lines
            .iter()
            .any(|l| l["message"] == "call refused" || l["message"] == "call failed"),
        "a give-up is neither a refusal nor a failure: {logs}"
    );
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(
        messages.ends_with(&["decision log closed", "stopped"]),
        "the log is closed before the server stops: {logs}"
    );

    // The decision made before the caller left is in the decision log.
    let decision_id = line["span"]["decision_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the cancelled call names its decision: {line}"));
    let kept = net_pathway::store::Store::open(&database)
        .await
        .expect("reopen the decision log")
        .decision(decision_id)
        .await
        .expect("read the decision log");
    assert!(kept.is_some(), "decision {decision_id} was not recorded");
}

/// The binary on `port`, its data in `dir`, logging JSON lines at info to a pipe.
fn start_logging_json(
    dir: &std::path::Path,
    port: u16,
    admin: &str,
    more: &[&std::ffi::OsStr],
) -> Child {
    let mut args = ["--admin-listen", admin, "--log-format", "json"]
        .map(OsStr::new)
        .to_vec();
    args.extend_from_slice(more);
    start_binary(port, dir, &args, "info", Stdio::piped())
}

/// Everything the binary wrote to stdout until it exited, and each line as JSON. Read off the
/// runtime's thread, so the client's connection can close and the server's drain can finish.
async fn lines_until_exit(server: &mut Child) -> (String, Vec<serde_json::Value>) {
    let mut stdout = server.stdout.take().expect("stdout");
    let logs = tokio::task::spawn_blocking(move || {
        let mut logs = String::new();
        stdout.read_to_string(&mut logs).map(|_| logs)
    })
    .await
    .expect("reader")
    .expect("read logs");
    let _ = server.wait();
    let lines = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (logs, lines)
}
