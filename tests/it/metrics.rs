//! Prometheus metrics on the admin listener after a mixed load: calls per method by status
//! code, latency histograms, decisions by therapy and outcome, decision-log writes, the active
//! policy as an info metric, policy reloads by outcome, and the process's own figures.

use std::sync::Arc;

use crate::common::*;
use net_pathway::ReloadCounters;
use net_pathway::pb;

#[tokio::test]
async fn metrics_show_per_status_counts_after_a_mixed_load() {
    let s = server().await;
    let reloads = Arc::new(ReloadCounters::default());
    reloads
        .failed
        .fetch_add(2, std::sync::atomic::Ordering::Relaxed);
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind admin");
    let address = admin.local_addr().expect("address");
    tokio::spawn(net_pathway::server::serve_admin(
        admin,
        s.state.clone(),
        Arc::clone(&reloads),
        std::future::pending(),
    ));

    for _ in 0..3 {
        s.client
            .evaluate_eligibility(pb::EvaluateEligibilityRequest {
                patient: Some(Box::new(ta539_small_bowel().england().profile())),
                therapies: vec![Therapy::PrrtLu177Dotatate as i32],
                ..Default::default()
            })
            .await
            .expect("evaluate");
    }
    let bad = pb::EvaluateEligibilityRequest {
        patient: Some(Box::new(ta539_small_bowel().ki67(140.0).profile())),
        ..Default::default()
    };
    assert!(s.client.evaluate_eligibility(bad).await.is_err());
    s.client
        .classify_funding(pb::ClassifyFundingRequest {
            patient: Some(Box::new(ta539_small_bowel().england().profile())),
            therapies: vec![Therapy::PrrtLu177Dotatate as i32],
            ..Default::default()
        })
        .await
        .expect("classify");

    let text = scrape_metrics(address).await;
    for line in [
        r#"netpathway_calls_total{code="Ok",method="EvaluateEligibility"} 3"#,
        r#"netpathway_calls_total{code="InvalidArgument",method="EvaluateEligibility"} 1"#,
        r#"netpathway_calls_total{code="Ok",method="ClassifyFunding"} 1"#,
        r#"netpathway_call_duration_seconds_count{method="EvaluateEligibility"} 4"#,
        r#"netpathway_decisions_total{kind="eligibility",outcome="ELIGIBILITY_STATUS_ELIGIBLE",therapy="THERAPY_PRRT_LU177_DOTATATE"} 3"#,
        r#"netpathway_decisions_total{kind="funding",outcome="FUNDING_ROUTE_ROUTINELY_COMMISSIONED_NICE_TA",therapy="THERAPY_PRRT_LU177_DOTATATE"} 1"#,
        "netpathway_decision_log_write_seconds_count 4",
        "netpathway_decision_log_queue_depth 0",
        // One call at a time: each record is its own group commit.
        "netpathway_decision_log_commits_total 4",
        "netpathway_decision_log_committed_records_total 4",
        r#"netpathway_policy_reloads_total{outcome="failed"} 2"#,
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(
        text.contains("netpathway_decision_log_commit_seconds_total "),
        "the writer's busy time is exposed:\n{text}"
    );
    // The process's own figures, as every Prometheus dashboard reads them: a server holds
    // memory, files and threads (its CPU seconds, in 10 ms ticks, may still read 0 here).
    for (name, at_least) in [
        ("process_cpu_seconds_total", 0.0),
        ("process_resident_memory_bytes", 1_000_000.0),
        ("process_open_fds", 1.0),
        ("process_threads", 2.0),
        ("process_start_time_seconds", 1_700_000_000.0),
    ] {
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no `{name}` sample in:\n{text}"));
        assert!(value >= at_least, "{name} is {value}");
    }
    let policy = net_pathway::engine::Policy::bundled().expect("bundled");
    let info = format!(
        r#"netpathway_policy_info{{content_hash="{}",version="{}"}} 1"#,
        policy.content_hash, policy.version
    );
    assert!(text.contains(&info), "missing `{info}`");
    let build = format!(
        r#"netpathway_build_info{{build="{}"}} 1"#,
        net_pathway::SERVICE_BUILD
    );
    assert!(text.contains(&build), "missing `{build}`");
}
