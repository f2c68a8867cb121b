//! The worked examples of docs/policy.md, applied exactly as written: each edit is accepted by
//! `net-pathway policy check` (or refused, where the document says so), and the served answer
//! changes as the document says.

use crate::common::*;
use net_pathway::engine::Policy;
use net_pathway::pb::{self, PrimarySite};

const DOC: &str = include_str!("../../docs/policy.md");
const BUNDLED: &str = include_str!("../../policy/net-pathway.toml");

/// The (find, replace) pairs documented under `<!-- edit: NAME -->` markers, in order.
fn edits(name: &str) -> Vec<(String, String)> {
    let marker = format!("<!-- edit: {name} -->");
    let mut pairs = Vec::new();
    let mut rest = DOC;
    while let Some(at) = rest.find(&marker) {
        rest = &rest[at + marker.len()..];
        let mut blocks = Vec::new();
        for _ in 0..2 {
            let open = rest
                .find("```toml\n")
                .expect("a toml block after the marker")
                + "```toml\n".len();
            let close = rest[open..].find("\n```").expect("the block closes") + open;
            blocks.push(rest[open..close].to_string());
            rest = &rest[close..];
        }
        pairs.push((blocks[0].clone(), blocks[1].clone()));
    }
    assert!(!pairs.is_empty(), "docs/policy.md documents edit '{name}'");
    pairs
}

/// The bundled policy with the named documented edits applied, in order.
fn edited(names: &[&str]) -> String {
    names
        .iter()
        .flat_map(|name| edits(name).into_iter().map(move |e| (name, e)))
        .fold(BUNDLED.to_string(), |text, (name, (find, replace))| {
            assert_eq!(
                text.matches(&find).count(),
                1,
                "edit '{name}': the find block occurs once:\n{find}"
            );
            text.replacen(&find, &replace, 1)
        })
}

fn policy_check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, text).expect("write policy");
    let (code, output) = run_to_exit(&["policy".as_ref(), "check".as_ref(), path.as_os_str()]);
    (code.unwrap_or(-1), output)
}

async fn served(names: &[&str]) -> TestServer {
    let text = edited(names);
    let (code, output) = policy_check(&text);
    assert_eq!(code, 0, "policy check accepts edits {names:?}: {output}");
    server_with(Policy::parse("edited.toml", &text).expect("valid")).await
}

const LU177: Therapy = Therapy::PrrtLu177Dotatate;

#[tokio::test]
async fn example_1_a_withhold_flag_holds_embolisation() {
    let mut patient = ta539_small_bowel().england().male();
    patient.0.extent = Some(pb::DiseaseExtent {
        extent: pb::Extent::Metastatic as i32,
        liver_metastases: Some(true),
        liver_dominant: Some(true),
        liver_burden_percent: Some(80.0),
        resectable_with_curative_intent: Some(false),
        extrahepatic_sites: vec![pb::ExtrahepaticSite::None as i32],
        ..Default::default()
    });
    let on = date(2026, 12, 2);
    let before = server().await;
    let e = before.eligibility_on(&patient, Therapy::LiverTae, on).await;
    assert_eq!(e.status(), Status::Eligible, "{}", e.summary);
    let flag = |e: &pb::TherapyEligibility| {
        e.safety_flags
            .iter()
            .find(|f| f.flag_id == "liver-burden-above-70")
            .map(|f| f.severity())
    };
    assert_eq!(flag(&e), Some(pb::SafetyFlagSeverity::Review));
    let route_before = before
        .funding_on(&patient, Therapy::LiverTae, on)
        .await
        .route();

    let after = served(&["liver-burden"]).await;
    for therapy in [Therapy::LiverTae, Therapy::LiverTace] {
        let e = after.eligibility_on(&patient, therapy, on).await;
        assert_eq!(e.status(), Status::Held, "{}", e.summary);
        assert_eq!(flag(&e), Some(pb::SafetyFlagSeverity::Withhold));
    }
    assert_eq!(
        after
            .funding_on(&patient, Therapy::LiverTae, on)
            .await
            .route(),
        route_before
    );
}

#[tokio::test]
async fn example_2_a_dated_mibg_site_for_north_wales() {
    let mut patient = Patient::new()
        .north_wales()
        .aged(45)
        .primary(PrimarySite::Paraganglioma)
        .metastatic();
    patient.0.imaging = Some(pb::Imaging {
        mibg_positive: Some(true),
        ..Default::default()
    });
    let before = server().await;
    assert!(
        site_ids(
            &before
                .funding_on(&patient, Therapy::I131Mibg, date(2026, 11, 28))
                .await
        )
        .is_empty()
    );

    let after = served(&["mibg-site"]).await;
    assert!(
        site_ids(
            &after
                .funding_on(&patient, Therapy::I131Mibg, date(2026, 8, 31))
                .await
        )
        .is_empty()
    );
    assert_eq!(
        site_ids(
            &after
                .funding_on(&patient, Therapy::I131Mibg, date(2026, 9, 1))
                .await
        ),
        vec!["liverpool"]
    );
}

#[tokio::test]
async fn example_3_reopening_the_registry_funds_new_non_gep_patients_within_it() {
    let bronchial = ta539_small_bowel()
        .england()
        .primary(PrimarySite::Lung)
        .lung_class(pb::LungClassification::TypicalCarcinoid);
    let before = server().await;
    assert_eq!(
        before
            .funding_on(&bronchial, LU177, date(2026, 11, 28))
            .await
            .route(),
        Route::AuditRegistryClosed
    );

    let (code, output) = policy_check(&edited(&["registry"]));
    assert_eq!(
        code, 3,
        "the policy's own bronchial case still expects a closed registry: {output}"
    );
    assert!(
        output.contains("expected route AuditRegistryClosed, got WithinAuditRegistry"),
        "{output}"
    );

    let after = served(&["registry", "registry-cases"]).await;
    assert_eq!(
        after
            .funding_on(&bronchial, LU177, date(2026, 10, 31))
            .await
            .route(),
        Route::AuditRegistryClosed
    );
    let reopened = after.funding_on(&bronchial, LU177, date(2026, 11, 1)).await;
    assert_eq!(reopened.route(), Route::WithinAuditRegistry);
    assert!(
        reopened
            .notes
            .iter()
            .any(|n| n.contains("is open to new patients")),
        "{:?}",
        reopened.notes
    );
}

#[tokio::test]
async fn example_4_the_misordered_composite_is_refused_with_file_and_line() {
    let (code, output) = policy_check(&edited(&["new-ta"]));
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains("criterion 'netter2-ki67': 'netter2-ki67-from-10' must be defined above the composite that names it"),
        "{output}"
    );
    assert!(output.contains("policy.toml:"), "{output}");
}

#[tokio::test]
async fn example_4_a_new_nice_ta_route_funds_first_line_g3_from_its_publication_date() {
    // Newly diagnosed (not progressive), well-differentiated G3, Ki-67 30 %, metastatic small-bowel NET.
    let patient = ta539_small_bowel().england().ki67(30.0).progressive(false);
    let before = server().await;
    assert_eq!(
        before
            .funding_on(&patient, LU177, date(2026, 11, 28))
            .await
            .route(),
        Route::IndividualFundingRequest
    );

    let after = served(&["new-ta-fixed"]).await;
    assert_eq!(
        after
            .funding_on(&patient, LU177, date(2026, 10, 31))
            .await
            .route(),
        Route::IndividualFundingRequest
    );
    let funded = after.funding_on(&patient, LU177, date(2026, 11, 1)).await;
    assert_eq!(funded.route(), Route::RoutinelyCommissionedNiceTa);
    assert_eq!(funded.route_id, "lu177.england.first-line-g2-g3");
    assert_eq!(
        after
            .eligibility_on(&patient, LU177, date(2026, 11, 1))
            .await
            .status(),
        Status::NotEligible
    );
}
