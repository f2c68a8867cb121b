//! Bad input gets INVALID_ARGUMENT listing every field violation (google.rpc.BadRequest),
//! never a panic, a clamp or a silent default.

use crate::common::*;
use net_pathway::google::r#type::Date;
use net_pathway::pb;
use net_pathway_client::field_violations;
use tonic::Code;
use tonic_types::StatusExt;

/// Sends an eligibility request and returns the violated fields, asserting INVALID_ARGUMENT.
async fn violations(s: &TestServer, request: pb::EvaluateEligibilityRequest) -> Vec<String> {
    let status = s
        .client
        .evaluate_eligibility(request)
        .await
        .expect_err("must be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let info = status
        .get_error_details()
        .error_info()
        .cloned()
        .expect("ErrorInfo detail");
    assert_eq!(info.reason, "INVALID_REQUEST");
    assert_eq!(info.domain, "net-pathway.nhs.uk");
    field_violations(&status)
        .into_iter()
        .map(|v| v.field)
        .collect()
}

fn request(patient: Patient) -> pb::EvaluateEligibilityRequest {
    pb::EvaluateEligibilityRequest {
        patient: Some(Box::new(patient.profile())),
        ..Default::default()
    }
}

#[tokio::test]
async fn ki67_of_140_percent_is_refused_not_clamped() {
    let s = server().await;
    let status = s
        .client
        .evaluate_eligibility(request(ta539_small_bowel().ki67(140.0)))
        .await
        .expect_err("refused");
    let v = field_violations(&status);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].field, "patient.tumour.ki67_percent");
    assert!(
        v[0].description.contains("between 0 and 100"),
        "{}",
        v[0].description
    );
}

#[tokio::test]
async fn krenning_score_above_4_is_refused() {
    let s = server().await;
    assert_eq!(
        violations(&s, request(ta539_small_bowel().krenning(5))).await,
        vec!["patient.imaging.krenning_score"]
    );
}

#[tokio::test]
async fn a_citation_style_the_contract_lacks_is_refused() {
    let s = server().await;
    let mut asked = request(ta539_small_bowel());
    asked.citations = 7;
    assert_eq!(violations(&s, asked).await, vec!["citations"]);
}

#[tokio::test]
async fn negative_laboratory_values_are_refused() {
    let s = server().await;
    let patient = ta539_small_bowel().labs(|l| {
        l.haemoglobin_g_per_l = Some(-5.0);
        l.platelets_10e9_per_l = Some(-1.0);
        l.creatinine_clearance_ml_per_min = Some(-30.0);
    });
    assert_eq!(
        violations(&s, request(patient)).await,
        vec![
            "patient.labs.haemoglobin_g_per_l",
            "patient.labs.platelets_10e9_per_l",
            "patient.labs.creatinine_clearance_ml_per_min"
        ]
    );
}

#[tokio::test]
async fn not_a_number_is_refused() {
    let s = server().await;
    assert_eq!(
        violations(&s, request(ta539_small_bowel().ki67(f64::NAN))).await,
        vec!["patient.tumour.ki67_percent"]
    );
}

#[tokio::test]
async fn a_scan_date_in_the_future_is_refused() {
    let s = server().await;
    let mut patient = ta539_small_bowel();
    patient
        .0
        .progression
        .as_mut()
        .expect("progression")
        .progression_scan_date = Some(date(2099, 1, 1));
    assert_eq!(
        violations(&s, request(patient)).await,
        vec!["patient.progression.progression_scan_date"]
    );
}

#[tokio::test]
async fn a_scan_date_before_birth_is_refused() {
    let s = server().await;
    let mut patient = ta539_small_bowel()
        .born(date(1960, 5, 1))
        .sstr_scan_on(date(1959, 12, 1));
    patient
        .0
        .demographics
        .as_mut()
        .expect("demographics")
        .age_years = None;
    assert_eq!(
        violations(&s, request(patient)).await,
        vec!["patient.imaging.sstr_scan_date"]
    );
}

#[tokio::test]
async fn progression_before_the_baseline_scan_is_refused() {
    let s = server().await;
    let mut patient = ta539_small_bowel();
    let p = patient.0.progression.as_mut().expect("progression");
    p.baseline_scan_date = Some(date(2026, 5, 1));
    p.progression_scan_date = Some(date(2026, 1, 1));
    assert_eq!(
        violations(&s, request(patient)).await,
        vec!["patient.progression.progression_scan_date"]
    );
}

#[tokio::test]
async fn unknown_enum_numbers_are_refused() {
    let s = server().await;
    let mut patient = ta539_small_bowel();
    patient.0.tumour.as_mut().expect("tumour").primary_site = 99;
    patient
        .0
        .demographics
        .as_mut()
        .expect("demographics")
        .nation = 7;
    let mut req = request(patient);
    req.view = 9;
    assert_eq!(
        violations(&s, req).await,
        vec![
            "view",
            "patient.demographics.nation",
            "patient.tumour.primary_site"
        ]
    );
}

#[tokio::test]
async fn the_therapy_filter_must_name_known_therapies_once() {
    let s = server().await;
    let mut req = request(ta539_small_bowel());
    req.therapies = vec![
        pb::Therapy::PrrtLu177Dotatate as i32,
        pb::Therapy::Unspecified as i32,
        42,
        pb::Therapy::PrrtLu177Dotatate as i32,
    ];
    assert_eq!(
        violations(&s, req).await,
        vec!["therapies[1]", "therapies[2]", "therapies[3]"]
    );
}

#[tokio::test]
async fn a_request_without_a_patient_is_refused() {
    let s = server().await;
    assert_eq!(
        violations(&s, pb::EvaluateEligibilityRequest::default()).await,
        vec!["patient"]
    );
}

#[tokio::test]
async fn as_of_dates_must_be_real_and_not_in_the_future() {
    let s = server().await;
    for (as_of, why) in [
        (
            Date {
                year: 2025,
                month: 2,
                day: 30,
            },
            "not a calendar date",
        ),
        (
            Date {
                year: 2025,
                month: 6,
                day: 0,
            },
            "partial date",
        ),
        (
            Date {
                year: 2099,
                month: 1,
                day: 1,
            },
            "future",
        ),
        (
            Date {
                year: 1999,
                month: 12,
                day: 31,
            },
            "before 2000",
        ),
    ] {
        let mut req = request(ta539_small_bowel());
        req.as_of_date = Some(as_of);
        assert_eq!(violations(&s, req).await, vec!["as_of_date"], "{why}");
    }
}

#[tokio::test]
async fn request_id_must_be_a_uuid() {
    let s = server().await;
    let mut req = request(ta539_small_bowel());
    req.request_id = "my-request".into();
    assert_eq!(violations(&s, req).await, vec!["request_id"]);
}

#[tokio::test]
async fn performance_status_out_of_range_is_refused() {
    let s = server().await;
    let patient = ta539_small_bowel().ecog(7).karnofsky(55);
    assert_eq!(
        violations(&s, request(patient)).await,
        vec![
            "patient.fitness.ecog_performance_status",
            "patient.fitness.karnofsky_performance_status"
        ]
    );
}

#[tokio::test]
async fn age_must_be_plausible_and_agree_with_the_date_of_birth() {
    let s = server().await;
    assert_eq!(
        violations(&s, request(ta539_small_bowel().aged(130))).await,
        vec!["patient.demographics.age_years"]
    );
    let disagreeing = ta539_small_bowel().aged(30).born(date(1960, 1, 1));
    assert_eq!(
        violations(&s, request(disagreeing)).await,
        vec!["patient.demographics.age_years"]
    );
}

#[tokio::test]
async fn inconsistent_facts_are_refused() {
    let s = server().await;
    let mut patient = ta539_small_bowel().england().male().pregnant(true);
    patient
        .0
        .demographics
        .as_mut()
        .expect("demographics")
        .welsh_region = pb::WelshRegion::North as i32;
    patient
        .0
        .extent
        .as_mut()
        .expect("extent")
        .extrahepatic_sites = vec![
        pb::ExtrahepaticSite::None as i32,
        pb::ExtrahepaticSite::Bone as i32,
    ];
    patient
        .0
        .tumour
        .as_mut()
        .expect("tumour")
        .lung_classification = pb::LungClassification::TypicalCarcinoid as i32;
    assert_eq!(
        violations(&s, request(patient)).await,
        vec![
            "patient.demographics.welsh_region",
            "patient.demographics.pregnant",
            "patient.tumour.lung_classification",
            "patient.extent.extrahepatic_sites"
        ]
    );
}

#[tokio::test]
async fn a_welsh_health_board_must_agree_with_the_nation_and_region() {
    // Betsi Cadwaladr is North Wales; a board is only for patients in Wales.
    let s = server().await;
    let mut south = ta539_small_bowel().south_wales();
    south
        .0
        .demographics
        .as_mut()
        .expect("demographics")
        .welsh_health_board = pb::WelshHealthBoard::BetsiCadwaladr as i32;
    assert_eq!(
        violations(&s, request(south)).await,
        vec!["patient.demographics.welsh_health_board"]
    );
    let mut english = ta539_small_bowel().england();
    english
        .0
        .demographics
        .as_mut()
        .expect("demographics")
        .welsh_health_board = pb::WelshHealthBoard::CardiffAndVale as i32;
    assert_eq!(
        violations(&s, request(english)).await,
        vec!["patient.demographics.welsh_health_board"]
    );
    let mut too_big = ta539_small_bowel().england();
    too_big
        .0
        .tumour
        .as_mut()
        .expect("tumour")
        .primary_tumour_size_mm = Some(301.0);
    assert_eq!(
        violations(&s, request(too_big)).await,
        vec!["patient.tumour.primary_tumour_size_mm"]
    );
}

#[tokio::test]
async fn an_oversized_list_is_one_violation_and_an_error_lists_at_most_20() {
    // 300,000 empty prior treatments once made a 32 MB error trailer, which clients cannot read;
    // 30,000 is as many as fit in the largest message now accepted (64 KiB).
    let s = server().await;
    let mut patient = ta539_small_bowel().england();
    patient.0.prior_treatments = vec![pb::PriorTreatment::default(); 30_000];
    let status = s
        .client
        .evaluate_eligibility(request(patient))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    let v = field_violations(&status);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].field, "patient.prior_treatments");
    assert!(status.details().len() < 8 * 1024);

    // A hundred treatments each dated in the future: the first 20 are listed, the count is whole.
    let mut patient = ta539_small_bowel().england();
    patient.0.prior_treatments = vec![
        pb::PriorTreatment {
            therapy: Therapy::Everolimus as i32,
            start_date: Some(Date {
                year: 2999,
                month: 1,
                day: 1
            }),
            ..Default::default()
        };
        100
    ];
    let status = s
        .client
        .evaluate_eligibility(request(patient))
        .await
        .expect_err("refused");
    assert_eq!(field_violations(&status).len(), 20);
    let info = status
        .get_error_details()
        .error_info()
        .cloned()
        .expect("ErrorInfo detail");
    assert_eq!(
        info.metadata.get("violation_count").map(String::as_str),
        Some("100")
    );
    assert!(
        status.message().contains("100 violations, the first 20"),
        "{}",
        status.message()
    );
    assert!(status.details().len() + status.message().len() < 8 * 1024);
}

#[tokio::test]
async fn a_prior_treatment_must_say_what_it_was() {
    let s = server().await;
    let mut patient = ta539_small_bowel();
    patient.0.prior_treatments.push(pb::PriorTreatment {
        cycles: Some(4),
        ..Default::default()
    });
    assert_eq!(
        violations(&s, request(patient)).await,
        vec!["patient.prior_treatments[0].therapy"]
    );
}

#[tokio::test]
async fn every_violation_is_reported_at_once() {
    let s = server().await;
    let patient = ta539_small_bowel()
        .ki67(140.0)
        .krenning(9)
        .labs(|l| l.albumin_g_per_l = Some(-1.0));
    let mut req = request(patient);
    req.request_id = "x".into();
    assert_eq!(
        violations(&s, req).await,
        vec![
            "request_id",
            "patient.tumour.ki67_percent",
            "patient.imaging.krenning_score",
            "patient.labs.albumin_g_per_l"
        ]
    );
}

#[tokio::test]
async fn classify_funding_validates_the_same_way() {
    let s = server().await;
    let status = s
        .client
        .classify_funding(pb::ClassifyFundingRequest {
            patient: Some(Box::new(ta539_small_bowel().ki67(101.0).profile())),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        field_violations(&status)[0].field,
        "patient.tumour.ki67_percent"
    );
}

#[tokio::test]
async fn get_active_policy_validates_its_therapy_filter() {
    let s = server().await;
    let status = s
        .client
        .get_active_policy(pb::GetActivePolicyRequest { therapies: vec![0] })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(field_violations(&status)[0].field, "therapies[0]");
}

#[tokio::test]
async fn extreme_inputs_never_crash_the_server() {
    let s = server().await;
    let mut patient = ta539_small_bowel()
        .ki67(f64::INFINITY)
        .mitoses(f64::MIN)
        .krenning(i32::MIN)
        .ecog(i32::MAX)
        .born(Date {
            year: i32::MAX,
            month: i32::MAX,
            day: i32::MIN,
        });
    patient
        .0
        .progression
        .as_mut()
        .expect("progression")
        .assessed_by = "x".repeat(10_000);
    let found = violations(&s, request(patient)).await;
    assert!(found.len() >= 5, "{found:?}");
    // The server still answers afterwards.
    let ok = s
        .eligibility_on(
            &ta539_small_bowel().england(),
            Therapy::PrrtLu177Dotatate,
            date(2026, 11, 28),
        )
        .await;
    assert_eq!(ok.status(), Status::Eligible);
}

/// Field paths are spelled out only when a field is wrong, so each kind of path is checked
/// here: a patient field, an entry of a list (by its index), the request's therapy list, and a
/// prior treatment's fields (by the treatment's index).
#[tokio::test]
async fn each_violation_names_its_exact_field_whatever_kind_of_field_it_is() {
    let s = server().await;
    let mut patient = ta539_small_bowel();
    let profile = &mut patient.0;
    profile
        .tumour
        .get_or_insert_with(Default::default)
        .primary_site = 999;
    profile
        .imaging
        .get_or_insert_with(Default::default)
        .sstr_scan_date = Some(Date {
        year: 2026,
        month: 2,
        day: 30,
    });
    profile
        .extent
        .get_or_insert_with(Default::default)
        .extrahepatic_sites = vec![pb::ExtrahepaticSite::Bone as i32, 999];
    let date = |year, month, day| Some(Date { year, month, day });
    profile.prior_treatments.push(pb::PriorTreatment {
        therapy: pb::Therapy::SsaLanreotide as i32,
        start_date: date(2024, 2, 1),
        ..Default::default()
    });
    profile.prior_treatments.push(pb::PriorTreatment {
        therapy: pb::Therapy::PrrtLu177Dotatate as i32,
        start_date: date(2025, 6, 1),
        end_date: date(2025, 1, 1),
        cycles: Some(101),
        cumulative_activity_gbq: Some(61.0),
        best_response: 999,
    });
    let mut req = request(patient);
    req.therapies = vec![
        pb::Therapy::Everolimus as i32,
        999,
        pb::Therapy::Everolimus as i32,
    ];
    assert_eq!(
        violations(&s, req).await,
        vec![
            "therapies[1]",
            "therapies[2]",
            "patient.tumour.primary_site",
            "patient.extent.extrahepatic_sites[1]",
            "patient.imaging.sstr_scan_date",
            "patient.prior_treatments[1].best_response",
            "patient.prior_treatments[1].end_date",
            "patient.prior_treatments[1].cycles",
            "patient.prior_treatments[1].cumulative_activity_gbq",
        ]
    );
}
