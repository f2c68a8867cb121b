//! Nothing is lost: start the real binary, evaluate from many concurrent clients, SIGKILL the
//! server mid-load, restart it, and every decision id any client received is retrievable with
//! its full record. Run against both backends.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use net_pathway::pb;
use net_pathway_client::ClientOptions;

const CLIENTS: usize = 16;
const DECISIONS_BEFORE_KILL: usize = 300;

fn start(port: u16, url: &str, data_dir: &Path) -> Child {
    let args = ["--admin-listen", "127.0.0.1:0", "--database-url", url].map(OsStr::new);
    start_binary(port, data_dir, &args, "warn", Stdio::null())
}

async fn crash_and_recover(backend: &str, url: &str) {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut server = start(port, url, data_dir.path());
    let client = connect_when_serving(port, ClientOptions::default()).await;

    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let client = client.clone();
            let received = Arc::clone(&received);
            tokio::spawn(async move {
                let mut patient = ta539_small_bowel().england().profile();
                patient.identifiers = Some(pb::PatientIdentifiers {
                    local_patient_reference: format!("MRN{i:04}"),
                    ..Default::default()
                });
                loop {
                    let request = pb::ClassifyFundingRequest {
                        patient: Some(Box::new(patient.clone())),
                        ..Default::default()
                    };
                    match client.classify_funding(request).await {
                        Ok(answer) => received.lock().expect("lock").push(answer.decision_id),
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(60);
    while received.lock().expect("lock").len() < DECISIONS_BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "{backend}: too few decisions before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");
    for worker in workers {
        let _ = tokio::time::timeout(Duration::from_secs(15), worker).await;
    }
    let ids = received.lock().expect("lock").clone();
    assert!(ids.len() >= DECISIONS_BEFORE_KILL);

    let mut restarted = start(port, url, data_dir.path());
    let client = connect_when_serving(port, ClientOptions::default()).await;
    for id in &ids {
        let record = client
            .get_decision(pb::GetDecisionRequest {
                decision_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("{backend}: decision {id} was returned but is lost: {e:?}"))
            .decision
            .expect("record");
        match record.response {
            Some(pb::decision_record::Response::FundingResponse(r)) => {
                assert_eq!(&r.decision_id, id);
                assert_eq!(r.therapies.len(), 14, "{backend}: the full response");
            }
            other => panic!("{backend}: decision {id} has response {other:?}"),
        }
        assert!(record.request.is_some() && record.patient_pseudonym.starts_with("local:"));
    }
    let _ = restarted.kill();
    let _ = restarted.wait();
    eprintln!(
        "{backend}: {} decisions returned before SIGKILL, all retrieved after restart",
        ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_returned_decision_survives_sigkill_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("crash.db").display());
    crash_and_recover("sqlite", &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_returned_decision_survives_sigkill_on_postgresql() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    crash_and_recover("postgres", &url).await;
}
