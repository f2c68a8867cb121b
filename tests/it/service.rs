//! The service surface: health, the policy service, decision ids, compression, shutdown.

use crate::common::*;
use net_pathway::pb;
use net_pathway_client::{ClientOptions, NetPathwayClient};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

async fn health(s: &TestServer, service: &str) -> Result<ServingStatus, tonic::Status> {
    let mut client = HealthClient::new(s.client.channel());
    let response = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(response.into_inner().status())
}

#[tokio::test]
async fn every_service_reports_serving_once_a_policy_is_active() {
    let s = server().await;
    for service in [
        "",
        "netpathway.v1.EligibilityService",
        "netpathway.v1.FundingService",
        "netpathway.v1.PolicyService",
    ] {
        assert_eq!(
            health(&s, service).await.expect("health"),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
}

#[tokio::test]
async fn health_turns_not_serving_as_soon_as_draining_starts_and_the_server_then_stops() {
    let mut s = server().await;
    let mut client = HealthClient::new(s.client.channel());
    let mut watch = client
        .watch(HealthCheckRequest {
            service: "netpathway.v1.EligibilityService".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch
        .message()
        .await
        .expect("first status")
        .expect("a status");
    assert_eq!(first.status(), ServingStatus::Serving);

    s.shut_down();
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), watch.message())
        .await
        .expect("status change within 5 s")
        .expect("stream open")
        .expect("a status");
    assert_eq!(
        next.status(),
        ServingStatus::NotServing,
        "load balancers stop routing before calls drain"
    );

    drop(watch);
    drop(client);
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(5), &mut s.handle).await;
    assert!(
        matches!(stopped, Ok(Ok(()))),
        "server task ended cleanly: {stopped:?}"
    );
}

#[tokio::test]
async fn the_policy_service_describes_every_therapy_and_its_sources() {
    let s = server().await;
    let p = s
        .client
        .get_active_policy(pb::GetActivePolicyRequest::default())
        .await
        .expect("policy");
    let reference = p.policy.expect("reference");
    let bundled = net_pathway::engine::Policy::bundled().expect("bundled policy");
    assert_eq!(reference.version, bundled.version);
    assert_eq!(reference.content_hash, bundled.content_hash);
    assert_eq!(reference.service_build, net_pathway::SERVICE_BUILD);
    assert_eq!(p.effective_from, Some(date(2026, 12, 2)));
    assert!(p.example_case_count >= 5);
    assert_eq!(p.therapies.len(), 14, "every therapy the service covers");
    let lu = p
        .therapies
        .iter()
        .find(|t| t.therapy() == Therapy::PrrtLu177Dotatate)
        .expect("Lu-177");
    assert!(lu.decided);
    assert!(lu.criteria.iter().all(|c| c.source.is_some()));
    // Parameters as structured values: the platelet limit is a number a program can read.
    let platelets = lu
        .criteria
        .iter()
        .find(|c| c.criterion_id == "radionuclide-platelets")
        .and_then(|c| c.parameter_values.as_ref())
        .expect("platelet parameters");
    let field = |name: &str| platelets.fields.get(name).and_then(|v| v.kind.clone());
    use prost_types::value::Kind;
    assert_eq!(field("threshold"), Some(Kind::NumberValue(75.0)));
    assert_eq!(
        field("input"),
        Some(Kind::StringValue("labs.platelets_10e9_per_l".into()))
    );
    let ta539 = lu
        .routes
        .iter()
        .find(|r| r.route_id == "lu177.england.ta539")
        .expect("TA539 route");
    assert_eq!(ta539.route(), Route::RoutinelyCommissionedNiceTa);
    assert_eq!(ta539.prior_approval(), pb::PriorApprovalMechanism::Blueteq);
    assert_eq!(ta539.effective_from, Some(date(2018, 8, 29)));
    assert!(ta539.when_criteria.contains(&"gep-primary".to_string()));
    let registry = lu
        .routes
        .iter()
        .find(|r| r.route_id == "lu177.wales.non-gep-registry")
        .expect("registry route");
    assert_eq!(registry.route(), Route::AuditRegistryClosed);
    for therapy in &p.therapies {
        assert!(therapy.decided, "{:?} is decided", therapy.therapy());
        assert!(
            !therapy.criteria.is_empty()
                && therapy
                    .routes
                    .iter()
                    .any(|r| r.nation() == pb::Nation::England)
        );
        assert!(
            therapy
                .routes
                .iter()
                .any(|r| r.nation() == pb::Nation::Wales),
            "{:?} has Welsh routes",
            therapy.therapy()
        );
        assert!(therapy.criteria.iter().all(|c| c.source.is_some()));
        assert!(therapy.routes.iter().all(|r| r.source.is_some()));
    }
    assert!(
        p.sources
            .iter()
            .any(|s| s.id == "nice-ta539" && s.evidence() == pb::EvidenceLevel::Source)
    );

    // Every answer names the same policy the policy service describes.
    let e = s
        .client
        .evaluate_eligibility(pb::EvaluateEligibilityRequest {
            patient: Some(Box::new(ta539_small_bowel().profile())),
            ..Default::default()
        })
        .await
        .expect("evaluate");
    assert_eq!(e.policy, Some(reference));
}

#[tokio::test]
async fn each_decision_gets_its_own_time_ordered_uuid_v7() {
    let s = server().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let e = s
            .client
            .evaluate_eligibility(pb::EvaluateEligibilityRequest {
                patient: Some(Box::new(ta539_small_bowel().profile())),
                therapies: vec![Therapy::PrrtLu177Dotatate as i32],
                ..Default::default()
            })
            .await
            .expect("evaluate");
        let id = uuid_version(&e.decision_id);
        assert_eq!(id, Some('7'), "{}", e.decision_id);
        ids.push(e.decision_id);
    }
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), 3);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "UUIDv7 ids sort by time: {ids:?}"
    );
}

fn uuid_version(id: &str) -> Option<char> {
    (id.len() == 36).then(|| id.chars().nth(14)).flatten()
}

#[tokio::test]
async fn an_unspecified_as_of_date_means_today() {
    let s = server().await;
    let e = s
        .client
        .classify_funding(pb::ClassifyFundingRequest {
            patient: Some(Box::new(ta539_small_bowel().england().profile())),
            therapies: vec![Therapy::PrrtLu177Dotatate as i32],
            ..Default::default()
        })
        .await
        .expect("classify");
    let today = chrono_today();
    assert_eq!(e.as_of_date, Some(today));
}

fn chrono_today() -> net_pathway::google::r#type::Date {
    use chrono::Datelike;
    let today = net_pathway::today();
    net_pathway::google::r#type::Date {
        year: today.year(),
        month: today.month() as i32,
        day: today.day() as i32,
    }
}

#[tokio::test]
async fn gzip_compressed_calls_work() {
    let s = server().await;
    let options = ClientOptions {
        gzip: true,
        ..ClientOptions::default()
    };
    let client = NetPathwayClient::connect_with(format!("http://{}", s.address), options)
        .await
        .expect("connect");
    let f = client
        .classify_funding(pb::ClassifyFundingRequest {
            patient: Some(Box::new(ta539_small_bowel().england().profile())),
            therapies: vec![Therapy::PrrtLu177Dotatate as i32],
            ..Default::default()
        })
        .await
        .expect("classify over gzip");
    assert_eq!(f.therapies[0].route(), Route::RoutinelyCommissionedNiceTa);
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error_not_a_hang() {
    let options = ClientOptions {
        connect_timeout: std::time::Duration::from_millis(500),
        ..ClientOptions::default()
    };
    // Port 9 (discard) on loopback is closed on test machines.
    let result = NetPathwayClient::connect_with("http://127.0.0.1:9", options).await;
    assert!(result.is_err());
}

#[tokio::test]
async fn health_is_not_serving_while_the_database_is_unreachable() {
    let s = server().await;
    assert_eq!(
        health(&s, "netpathway.v1.FundingService")
            .await
            .expect("health"),
        ServingStatus::Serving
    );
    match &s.store {
        net_pathway::store::Store::Sqlite(pool) => pool.close().await,
        net_pathway::store::Store::Postgres(pool) => pool.close().await,
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let status = health(&s, "netpathway.v1.FundingService")
            .await
            .expect("health");
        if status == ServingStatus::NotServing {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health stayed {status:?} with the database gone"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        health(&s, "").await.expect("health"),
        ServingStatus::NotServing
    );
}

/// Two builds can answer differently under one policy (the WHO 2010 G3 fix did), so every
/// answer names the build that applied the policy: the package version and, built from a git
/// checkout, its commit as SemVer build metadata.
#[tokio::test]
async fn every_answer_names_the_build_that_applied_the_policy() {
    let s = server().await;
    let answer = s
        .client
        .evaluate_eligibility(pb::EvaluateEligibilityRequest {
            patient: Some(Box::new(ta539_small_bowel().england().profile())),
            as_of_date: Some(date(2026, 11, 28)),
            ..Default::default()
        })
        .await
        .expect("evaluate");
    let build = answer.policy.expect("policy reference").service_build;
    assert_eq!(build, net_pathway::SERVICE_BUILD);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        build == version || build.starts_with(&format!("{version}+")),
        "{build:?} is the package version {version}, with or without build metadata"
    );
    // Built from this checkout (CI's fresh clone is one), the build names its commit.
    let checkout = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    if let (Some(commit), Err(_)) = (checkout, std::env::var("NET_PATHWAY_REVISION")) {
        assert_eq!(build, format!("{version}+{commit}"));
    }
}
