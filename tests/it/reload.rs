//! Live policy reload: good and broken policies are dropped in repeatedly while clients
//! evaluate; no call fails, every answer matches the policy version it records, and a broken
//! file never becomes active. Then SIGHUP on the real binary.

use std::ffi::OsStr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use net_pathway::ReloadCounters;
use net_pathway::engine::Policy;
use net_pathway::pb;
use net_pathway::reload::watch;
use net_pathway_client::NetPathwayClient;

const BUNDLED: &str = include_str!("../../policy/net-pathway.toml");
const THRESHOLD: &str = "params = { score = 2 }   # the Lutathera licence's own words (reference §16.1); TA539 says only \"SSTR-positive\"";
const LU177: Therapy = Therapy::PrrtLu177Dotatate;

/// Version B needs Krenning 3 to count as SSTR-positive; version A (the bundled policy) takes
/// the licence's Krenning 2.
fn version_b() -> String {
    BUNDLED
        .replacen(THRESHOLD, "params = { score = 3 }", 1)
        .replacen("version = \"2026.12.1\"", "version = \"reload-b\"", 1)
}

fn broken() -> String {
    BUNDLED
        .replacen(
            "check = \"krenning_at_least\"",
            "check = \"krenning_at_leest\"",
            1,
        )
        .replacen("version = \"2026.12.1\"", "version = \"broken\"", 1)
}

fn write_atomically(path: &std::path::Path, text: &str) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).expect("write");
    std::fs::rename(&temp, path).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloading_good_and_broken_policies_under_load_fails_no_call() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, BUNDLED).expect("write policy");
    let s = server_with(Policy::load_file(&path).expect("valid")).await;
    let active = s.active.clone();
    let counters = Arc::new(ReloadCounters::default());
    let watcher = tokio::spawn(watch(
        active,
        path.clone(),
        Duration::from_millis(20),
        Arc::clone(&counters),
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let patient = ta539_small_bowel().england().krenning(2).profile();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let client = s.client.clone();
            let stop = Arc::clone(&stop);
            let patient = patient.clone();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let request = pb::EvaluateEligibilityRequest {
                        patient: Some(Box::new(patient.clone())),
                        therapies: vec![LU177 as i32],
                        view: pb::EvaluationView::Basic as i32,
                        ..Default::default()
                    };
                    answers.push(client.evaluate_eligibility(request).await);
                }
                answers
            })
        })
        .collect();

    for round in 0..6 {
        let text = match round % 3 {
            0 => version_b(),
            1 => broken(),
            _ => BUNDLED.to_string(),
        };
        write_atomically(&path, &text);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::Relaxed);

    let mut by_version: std::collections::BTreeMap<String, usize> = Default::default();
    for client in clients {
        for answer in client.await.expect("client task") {
            let answer = answer.unwrap_or_else(|e| panic!("a call failed during reloads: {e:?}"));
            let version = answer.policy.expect("policy").version;
            let status = answer.therapies[0].status();
            match version.as_str() {
                "2026.12.1" => {
                    assert_eq!(
                        status,
                        Status::Eligible,
                        "Krenning 2 under the bundled policy"
                    )
                }
                "reload-b" => assert_eq!(status, Status::NotEligible, "Krenning 2 under version B"),
                other => panic!("an answer recorded policy version {other}"),
            }
            *by_version.entry(version).or_default() += 1;
        }
    }
    watcher.abort();
    assert_eq!(by_version.len(), 2, "both versions served: {by_version:?}");
    assert!(
        counters.failed.load(Ordering::Relaxed) >= 2,
        "each broken file was refused"
    );
    assert!(
        counters.succeeded.load(Ordering::Relaxed) >= 3,
        "each good file took over"
    );
}

#[tokio::test]
async fn sighup_reloads_the_policy_file_and_a_broken_file_leaves_the_last_good_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, BUNDLED).expect("write policy");
    let port = free_port();
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin_listen = admin.to_string();
    let args = [
        OsStr::new("--admin-listen"),
        OsStr::new(&admin_listen),
        OsStr::new("--policy-poll-seconds"),
        OsStr::new("0"),
        OsStr::new("--policy"),
        path.as_os_str(),
    ];
    let mut child = start_binary(port, &dir.path().join("data"), &args, "info", Stdio::null());
    let address = format!("http://127.0.0.1:{port}");
    let version = |client: NetPathwayClient| async move {
        client
            .get_active_policy(pb::GetActivePolicyRequest::default())
            .await
            .ok()
            .and_then(|p| p.policy)
            .map(|p| p.version)
    };
    let wait_for = |wanted: &'static str| {
        let address = address.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(client) = NetPathwayClient::connect(address.clone()).await
                    && version(client).await.as_deref() == Some(wanted)
                {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "policy {wanted} never became active"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for("2026.12.1").await;
    write_atomically(&path, &version_b());
    send_signal(&child, "HUP");
    wait_for("reload-b").await;

    write_atomically(&path, &broken());
    send_signal(&child, "HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !scrape_metrics(admin)
        .await
        .contains("netpathway_policy_reloads_total{outcome=\"failed\"} 1")
    {
        assert!(Instant::now() < deadline, "the broken file was never tried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for("reload-b").await;
    assert!(
        child.try_wait().expect("status").is_none(),
        "the server keeps running"
    );
    let _ = child.kill();
    let _ = child.wait();
}
