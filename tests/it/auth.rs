//! Caller identity and roles over a real socket: bearer JWTs verified offline against a JWKS
//! file, the role each RPC needs, and the caller recorded with every decision.

use crate::common::jwt::{self, IdentityProvider};
use crate::common::*;
use net_pathway::auth::Authenticator;
use net_pathway::pb;
use net_pathway_client::NetPathwayClient;
use tonic::Code;

/// A server trusting one identity provider, with 30 s of clock skew allowed.
async fn guarded() -> (TestServer, IdentityProvider, tempfile::TempDir) {
    let idp = IdentityProvider::new("hospital-idp-2026");
    let dir = tempfile::tempdir().expect("dir");
    let jwks = IdentityProvider::jwks_file(dir.path(), &[&idp]);
    let auth = Authenticator::open()
        .with_jwt(jwt::settings(jwks, 30))
        .expect("JWKS loads");
    (server_with_auth(auth).await, idp, dir)
}

/// How many decisions the server's store holds.
async fn recorded(server: &TestServer) -> usize {
    server
        .store
        .list_decisions(&Default::default(), None, 500)
        .await
        .expect("store")
        .len()
}

fn as_caller(server: &TestServer, token: &str) -> NetPathwayClient {
    server.client.with_bearer_token(token).expect("token")
}

/// The TA539 patient in England, for eligibility.
fn referral() -> pb::EvaluateEligibilityRequest {
    pb::EvaluateEligibilityRequest {
        patient: Some(Box::new(ta539_small_bowel().england().profile())),
        therapies: vec![Therapy::PrrtLu177Dotatate as i32],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_call_without_a_token_is_unauthenticated() {
    let (server, _idp, _dir) = guarded().await;
    let refused = server
        .client
        .evaluate_eligibility(referral())
        .await
        .expect_err("no credential");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_eq!(reason(&refused), "CREDENTIAL_MISSING");
    assert!(refused.message().contains("Bearer"), "{refused:?}");
    assert_eq!(
        recorded(&server).await,
        0,
        "nothing is recorded for a refused caller"
    );
}

#[tokio::test]
async fn the_mdt_workflow_with_the_evaluate_role_is_answered_and_recorded_by_name() {
    let (server, idp, _dir) = guarded().await;
    let mdt = as_caller(&server, &idp.token("mdt-workflow", &["evaluate"]));
    let answer = mdt
        .evaluate_eligibility(referral())
        .await
        .expect("answered");
    assert_eq!(
        answer.therapies[0].status(),
        Status::Eligible,
        "TA539 patient"
    );

    let auditor = as_caller(
        &server,
        &idp.token("clinical-audit", &["decision-log-read"]),
    );
    let record = auditor
        .get_decision(pb::GetDecisionRequest {
            decision_id: answer.decision_id.clone(),
        })
        .await
        .expect("auditor reads the log")
        .decision
        .expect("record");
    assert_eq!(
        record.caller, "mdt-workflow",
        "the record names who asked (the token's sub)"
    );
}

#[tokio::test]
async fn a_caller_without_the_rpcs_role_is_permission_denied() {
    let (server, idp, _dir) = guarded().await;
    let registry_clerk = as_caller(&server, &idp.token("registry-clerk", &["registry-read"]));
    let refused = registry_clerk
        .evaluate_eligibility(referral())
        .await
        .expect_err("registry-read cannot evaluate");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(reason(&refused), "ROLE_MISSING");
    assert_eq!(
        tonic_types::StatusExt::get_error_details(&refused)
            .error_info()
            .and_then(|info| info.metadata.get("role").cloned())
            .as_deref(),
        Some("evaluate")
    );
    assert!(refused.message().contains("'evaluate'"), "{refused:?}");
    registry_clerk
        .list_enrolments(pb::ListEnrolmentsRequest::default())
        .await
        .expect("registry-read lists enrolments");
    let refused = registry_clerk
        .withdraw_enrolment(pb::WithdrawEnrolmentRequest::default())
        .await
        .expect_err("registry-read cannot write");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    let prescriber = as_caller(&server, &idp.token("e-prescribing", &["evaluate"]));
    for refused in [
        prescriber
            .list_decisions(pb::ListDecisionsRequest::default())
            .await
            .expect_err("evaluate cannot read the log"),
        prescriber
            .get_enrolment(pb::GetEnrolmentRequest::default())
            .await
            .expect_err("evaluate cannot read the registry"),
    ] {
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    }
    prescriber
        .get_active_policy(pb::GetActivePolicyRequest::default())
        .await
        .expect("evaluate reads the policy");
}

/// A bronchial NET agreed for Lu-177 by the Royal Free NET MDT before the registry's hold,
/// recorded by the MDT's coordinator system and later withdrawn by the registry office: the
/// audit registry names both callers, as the decision log names who asked for each decision.
#[tokio::test]
async fn the_registry_names_who_recorded_an_enrolment_and_who_withdrew_it() {
    let (server, idp, _dir) = guarded().await;
    let coordinator = as_caller(
        &server,
        &idp.token("rf-net-mdt-coordinator", &["registry-write"]),
    );
    let enrolled = coordinator
        .record_prior_agreement(prior_agreement_before_the_hold("9434765919"))
        .await
        .expect("prior agreement recorded")
        .enrolment
        .expect("enrolment");
    assert_eq!(enrolled.enrolled_by, "rf-net-mdt-coordinator");
    assert_eq!(enrolled.withdrawn_by, "", "still active");

    let office = as_caller(&server, &idp.token("registry-office", &["registry-write"]));
    office
        .withdraw_enrolment(pb::WithdrawEnrolmentRequest {
            enrolment_id: enrolled.enrolment_id.clone(),
            reason: "course completed".into(),
        })
        .await
        .expect("withdrawn");
    let auditor = as_caller(&server, &idp.token("clinical-audit", &["registry-read"]));
    let stored = auditor
        .get_enrolment(pb::GetEnrolmentRequest {
            enrolment_id: enrolled.enrolment_id,
        })
        .await
        .expect("read back")
        .enrolment
        .expect("enrolment");
    assert_eq!(stored.state(), pb::EnrolmentState::Withdrawn);
    assert_eq!(
        (stored.enrolled_by.as_str(), stored.withdrawn_by.as_str()),
        ("rf-net-mdt-coordinator", "registry-office"),
        "each change to the registry names the token's sub that made it"
    );
}

#[tokio::test]
async fn roles_may_come_as_a_space_separated_claim_and_unknown_roles_are_ignored() {
    let (server, idp, _dir) = guarded().await;
    let now = jwt::now();
    let token = idp.sign(serde_json::json!({
        "iss": jwt::ISSUER, "aud": jwt::AUDIENCE, "sub": "funding-requests",
        "roles": "openid evaluate other-service:admin", "exp": now + 600,
    }));
    as_caller(&server, &token)
        .evaluate_eligibility(referral())
        .await
        .expect("evaluate from a space-separated claim");
}

#[tokio::test]
async fn tokens_that_are_expired_early_misaddressed_or_forged_are_unauthenticated() {
    let (server, idp, _dir) = guarded().await;
    let now = jwt::now();
    let claims = |changes: serde_json::Value| {
        let mut c = serde_json::json!({
            "iss": jwt::ISSUER, "aud": jwt::AUDIENCE, "sub": "mdt-workflow",
            "roles": ["evaluate"], "nbf": now - 60, "exp": now + 600,
        });
        for (k, v) in changes.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };
    let forger = IdentityProvider::new("hospital-idp-2026");
    let cases = [
        (
            idp.sign(claims(serde_json::json!({"exp": now - 120}))),
            "expired",
        ),
        (
            idp.sign(claims(serde_json::json!({"nbf": now + 600}))),
            "not valid yet",
        ),
        (
            idp.sign(claims(serde_json::json!({"aud": "another-service"}))),
            "audience",
        ),
        (
            idp.sign(claims(
                serde_json::json!({"iss": "https://elsewhere.example"}),
            )),
            "issuer",
        ),
        (forger.sign(claims(serde_json::json!({}))), "signature"),
        (
            idp.sign_with_header(
                serde_json::json!({"alg": "ES256", "kid": idp.kid, "crit": ["exp-ext"], "exp-ext": true}),
                claims(serde_json::json!({})),
            ),
            "critical extensions",
        ),
        ("not.a.jwt".to_string(), "well-formed"),
    ];
    for (token, why) in cases {
        let refused = as_caller(&server, &token)
            .evaluate_eligibility(referral())
            .await
            .expect_err(why);
        assert_eq!(refused.code(), Code::Unauthenticated, "{why}: {refused:?}");
        assert_eq!(reason(&refused), "CREDENTIAL_REFUSED", "{why}");
        assert!(refused.message().contains(why), "{why}: {refused:?}");
        assert!(
            !refused.message().contains(&token),
            "the token is never echoed"
        );
    }
    // Within the configured 30 s of skew, a just-expired token is still accepted.
    as_caller(
        &server,
        &idp.sign(claims(serde_json::json!({"exp": now - 10}))),
    )
    .evaluate_eligibility(referral())
    .await
    .expect("10 s past expiry is within the 30 s skew");
    assert_eq!(recorded(&server).await, 1);
}

#[test]
fn key_sets_with_shared_secrets_and_skews_beyond_five_minutes_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("jwks.json");
    std::fs::write(
        &path,
        r#"{"keys":[{"kty":"oct","kid":"shared","k":"c2VjcmV0"}]}"#,
    )
    .expect("write");
    let error = Authenticator::open()
        .with_jwt(jwt::settings(path.clone(), 30))
        .expect_err("oct key");
    assert!(error.to_string().contains("symmetric"), "{error}");

    let idp = IdentityProvider::new("k1");
    let good = IdentityProvider::jwks_file(dir.path(), &[&idp]);
    let error = Authenticator::open()
        .with_jwt(jwt::settings(good, 3600))
        .expect_err("an hour of skew");
    assert!(error.to_string().contains("300"), "{error}");
}

#[tokio::test]
async fn a_rotated_key_set_takes_over_and_a_broken_one_keeps_the_keys_in_use() {
    let (server, old_idp, dir) = guarded().await;
    let new_idp = IdentityProvider::new("hospital-idp-2027");
    let old_token = old_idp.token("mdt-workflow", &["evaluate"]);
    let new_token = new_idp.token("mdt-workflow", &["evaluate"]);

    std::fs::write(dir.path().join("jwks.json"), "{\"keys\": [").expect("write");
    assert!(
        server.state.auth.reload_keys().is_err(),
        "broken JWKS refused"
    );
    as_caller(&server, &old_token)
        .evaluate_eligibility(referral())
        .await
        .expect("the old key still verifies");

    IdentityProvider::jwks_file(dir.path(), &[&new_idp]);
    server.state.auth.reload_keys().expect("rotated JWKS loads");
    as_caller(&server, &new_token)
        .evaluate_eligibility(referral())
        .await
        .expect("the new key verifies");
    let refused = as_caller(&server, &old_token)
        .evaluate_eligibility(referral())
        .await
        .expect_err("the retired key no longer verifies, even for a token seen before");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}
