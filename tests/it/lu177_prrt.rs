//! Lu-177 DOTATATE PRRT, decided end to end over a real socket through the client library.
//! Each test is a clinical case: the patient, the expected answer, the source that makes it right.

use crate::common::*;
use net_pathway::pb::{
    self, CriterionOutcome, PrimarySite, PriorApprovalMechanism, SafetyFlagSeverity,
};

const LU177: Therapy = Therapy::PrrtLu177Dotatate;

fn today() -> net_pathway::google::r#type::Date {
    date(2026, 11, 28)
}

// ---- TA539 route (NICE TA539 1.1) ----

#[tokio::test]
#[allow(deprecated)] // Reads the route's inline source, the default form.
async fn progressive_g2_sstr_positive_metastatic_small_bowel_net_in_england_is_funded_under_ta539()
{
    // NICE TA539 1.1: unresectable or metastatic, progressive, well-differentiated G1/G2,
    // SSTR-positive GEP NET in an adult; NHS England specialised commissioning, Blueteq.
    let s = server().await;
    let patient = ta539_small_bowel().england();

    let e = s.eligibility_on(&patient, LU177, today()).await;
    assert_eq!(e.status(), Status::Eligible, "{}", e.summary);
    assert!(e.missing_inputs.is_empty());
    assert_eq!(
        e.deciding_mdt.as_ref().map(|m| m.id.as_str()),
        Some("england-net-mdt")
    );
    assert!(
        e.criteria
            .iter()
            .filter(|c| c.role() == pb::CriterionRole::Required)
            .all(|c| c.outcome() == CriterionOutcome::Met)
    );

    let f = s.funding_on(&patient, LU177, today()).await;
    assert_eq!(
        f.route(),
        Route::RoutinelyCommissionedNiceTa,
        "{}",
        f.summary
    );
    assert_eq!(f.route_id, "lu177.england.ta539");
    let approval = f.prior_approval.as_ref().expect("prior approval");
    assert!(approval.required);
    assert_eq!(approval.mechanism(), PriorApprovalMechanism::Blueteq);
    assert_eq!(
        f.commissioner.as_ref().map(|c| c.name.as_str()),
        Some("NHS England specialised commissioning")
    );
    assert_eq!(f.source.as_ref().map(|s| s.id.as_str()), Some("nice-ta539"));
    assert_eq!(f.next_route_if_refused(), Route::IndividualFundingRequest);
    assert_eq!(site_ids(&f), vec!["england-mrt-centre"]);
    assert!(
        f.notes.iter().any(|n| n.contains("4 infusions of 7.4 GBq")),
        "course described: {:?}",
        f.notes
    );
}

#[tokio::test]
async fn well_differentiated_g1_pancreatic_net_in_wales_is_nice_mandated_through_nwjcc() {
    // TA539 applies in Wales: NICE-recommended medicines within 2 months; NWJCC since 2024-04-01.
    let s = server().await;
    let patient = ta539_small_bowel()
        .primary(PrimarySite::Pancreas)
        .ki67(2.0)
        .south_wales();
    let f = s.funding_on(&patient, LU177, today()).await;
    assert_eq!(f.route(), Route::RoutinelyCommissionedNiceTa);
    assert_eq!(
        f.commissioner.as_ref().map(|c| c.name.as_str()),
        Some("NHS Wales Joint Commissioning Committee (NWJCC)")
    );
    assert_eq!(f.prior_approval.as_ref().map(|p| p.required), Some(false));
    assert!(
        f.notes.iter().any(|n| n.contains("within 2 months")),
        "{:?}",
        f.notes
    );
    assert_eq!(
        f.next_route_if_refused(),
        Route::IndividualPatientFundingRequest
    );
}

#[tokio::test]
async fn before_ta539_was_published_an_english_patient_needed_an_ifr() {
    // TA539 published 2018-08-29; before it Lu-177 was not routinely commissioned.
    let s = server().await;
    let f = s
        .funding_on(&ta539_small_bowel().england(), LU177, date(2018, 6, 1))
        .await;
    assert_eq!(f.route(), Route::IndividualFundingRequest, "{}", f.summary);
}

// ---- Non-GEP NETs and retreatment: the audit registry (service page) ----

#[tokio::test]
#[allow(deprecated)] // Reads the route's inline source, the default form.
async fn bronchial_net_is_in_the_audit_registry_closed_to_new_patients_via_the_royal_free_mdt() {
    // Service page: non-GEP NETs (bronchial...) only within a prospective audit and registry,
    // further inclusion on hold, decisions via the Royal Free NET MDT.
    let s = server().await;
    let patient = ta539_small_bowel()
        .england()
        .primary(PrimarySite::Lung)
        .lung_class(pb::LungClassification::AtypicalCarcinoid);

    let e = s.eligibility_on(&patient, LU177, today()).await;
    assert_eq!(
        e.status(),
        Status::Eligible,
        "clinically a candidate: {}",
        e.summary
    );
    assert_eq!(
        e.deciding_mdt.as_ref().map(|m| m.id.as_str()),
        Some("royal-free-net-mdt")
    );

    let f = s.funding_on(&patient, LU177, today()).await;
    assert_eq!(f.route(), Route::AuditRegistryClosed, "{}", f.summary);
    assert_eq!(
        f.deciding_mdt.as_ref().map(|m| m.name.as_str()),
        Some("Royal Free London NET MDT")
    );
    assert_eq!(
        f.prior_approval.as_ref().map(|p| p.mechanism()),
        Some(PriorApprovalMechanism::RegistryAgreement)
    );
    assert!(
        f.notes.iter().any(|n| n.contains("closed to new patients")),
        "{:?}",
        f.notes
    );
    assert_eq!(f.next_route_if_refused(), Route::IndividualFundingRequest);
    assert_eq!(
        f.source.as_ref().map(|s| s.id.as_str()),
        Some("cavuhb-non-gep-registry")
    );
}

#[tokio::test]
async fn paraganglioma_phaeochromocytoma_and_medullary_thyroid_are_registry_only() {
    let s = server().await;
    for site in [
        PrimarySite::Paraganglioma,
        PrimarySite::Phaeochromocytoma,
        PrimarySite::MedullaryThyroid,
    ] {
        let patient = ta539_small_bowel()
            .england()
            .primary(site)
            .stated_grade(pb::WhoGrade::G2);
        let f = s.funding_on(&patient, LU177, today()).await;
        assert_eq!(
            f.route(),
            Route::AuditRegistryClosed,
            "{site:?}: {}",
            f.summary
        );
        assert_eq!(
            f.deciding_mdt.as_ref().map(|m| m.id.as_str()),
            Some("royal-free-net-mdt"),
            "{site:?}"
        );
    }
}

#[tokio::test]
async fn welsh_phaeochromocytoma_is_registry_only_with_ipfr_next() {
    let s = server().await;
    let patient = ta539_small_bowel()
        .south_wales()
        .primary(PrimarySite::Phaeochromocytoma);
    let f = s.funding_on(&patient, LU177, today()).await;
    assert_eq!(f.route(), Route::AuditRegistryClosed);
    assert_eq!(
        f.next_route_if_refused(),
        Route::IndividualPatientFundingRequest
    );
    assert_eq!(site_ids(&f), vec!["royal-free-london"]);
}

#[tokio::test]
async fn a_second_course_for_a_gep_net_is_retreatment_and_registry_only() {
    // Service page: those requiring retreatment are not funded by NHSE; audit registry only.
    // Lutathera SmPC (reference §16.1): retreatment is a further course after a completed one.
    let s = server().await;
    let patient = ta539_small_bowel()
        .england()
        .previously_treated_with(Therapy::PrrtLu177Dotatate, 4);
    let f = s.funding_on(&patient, LU177, today()).await;
    assert_eq!(f.route(), Route::AuditRegistryClosed, "{}", f.summary);
    assert_eq!(f.route_id, "lu177.england.retreatment-registry");
    assert_eq!(
        f.deciding_mdt.as_ref().map(|m| m.id.as_str()),
        Some("royal-free-net-mdt")
    );
    let retreatment = f
        .criteria
        .iter()
        .find(|c| c.criterion_id == "prrt-retreatment")
        .expect("retreatment criterion");
    assert_eq!(retreatment.outcome(), CriterionOutcome::Met);

    // A first course in progress (2 of 4 infusions) is not retreatment: TA539 still applies.
    let in_progress = ta539_small_bowel()
        .england()
        .previously_treated_with(Therapy::PrrtLu177Dotatate, 2);
    let f = s.funding_on(&in_progress, LU177, today()).await;
    assert_eq!(
        f.route(),
        Route::RoutinelyCommissionedNiceTa,
        "{}",
        f.summary
    );
}

#[tokio::test]
async fn unknown_primary_leaves_the_ta539_question_to_the_mdt() {
    // Reference §14.5 / clinical README position 7: neither GEP nor non-GEP for TA539.
    let s = server().await;
    let patient = ta539_small_bowel()
        .england()
        .primary(PrimarySite::UnknownPrimary);
    let f = s.funding_on(&patient, LU177, today()).await;
    assert_eq!(f.route(), Route::MdtDecision);
    assert!(f.summary.contains("MDT must decide"), "{}", f.summary);
    assert!(
        f.missing_inputs.is_empty(),
        "nothing is missing; the MDT decides"
    );
    assert_eq!(
        f.deciding_mdt.as_ref().map(|m| m.id.as_str()),
        Some("england-net-mdt")
    );
}

// ---- Delivery site and commissioner by date and geography ----

#[tokio::test]
async fn south_wales_prrt_moved_from_london_to_velindre_on_29_july_2025() {
    // Velindre news 29 Jul 2025: PRRT for South and Mid Wales adults at Velindre from July 2025.
    let s = server().await;
    let patient = ta539_small_bowel().south_wales();
    for (as_of, site) in [
        (date(2025, 6, 1), "royal-free-london"),
        (date(2025, 7, 28), "royal-free-london"),
        (date(2025, 7, 29), "velindre"),
        (date(2025, 8, 1), "velindre"),
    ] {
        let f = s.funding_on(&patient, LU177, as_of).await;
        assert_eq!(f.route(), Route::RoutinelyCommissionedNiceTa);
        assert_eq!(site_ids(&f), vec![site], "as of {as_of:?}");
    }
}

#[tokio::test]
async fn whssc_became_nwjcc_on_1_april_2024() {
    // SI 2024/135: the NHS Wales Joint Commissioning Committee replaced WHSSC.
    let s = server().await;
    let patient = ta539_small_bowel().south_wales();
    let before = s.funding_on(&patient, LU177, date(2024, 3, 31)).await;
    let after = s.funding_on(&patient, LU177, date(2024, 4, 1)).await;
    assert_eq!(
        before.commissioner.map(|c| c.name),
        Some("Welsh Health Specialised Services Committee (WHSSC)".into())
    );
    assert_eq!(
        after.commissioner.map(|c| c.name),
        Some("NHS Wales Joint Commissioning Committee (NWJCC)".into())
    );
}

#[tokio::test]
async fn north_wales_patients_go_to_liverpool() {
    let s = server().await;
    let patient = ta539_small_bowel().north_wales();
    let f = s.funding_on(&patient, LU177, date(2025, 8, 1)).await;
    assert_eq!(site_ids(&f), vec!["liverpool"]);
    assert_eq!(
        f.deciding_mdt.as_ref().map(|m| m.id.as_str()),
        Some("liverpool-net-mdt")
    );
}

#[tokio::test]
async fn welsh_patient_without_a_region_has_no_site_and_is_told_why() {
    let s = server().await;
    let f = s
        .funding_on(&ta539_small_bowel().wales_region_unknown(), LU177, today())
        .await;
    assert_eq!(f.route(), Route::RoutinelyCommissionedNiceTa);
    assert!(f.delivery_sites.is_empty());
    assert!(
        f.notes
            .iter()
            .any(|n| n.contains("patient.demographics.welsh_region")),
        "{:?}",
        f.notes
    );
}

#[tokio::test]
async fn unknown_nation_makes_funding_undetermined_not_english() {
    // Clinical README position 5: unknown nation is INDETERMINATE, not English by default.
    let s = server().await;
    let f = s.funding_on(&ta539_small_bowel(), LU177, today()).await;
    assert_eq!(f.route(), Route::Undetermined);
    assert_eq!(f.missing_inputs, vec!["patient.demographics.nation"]);
    assert!(f.commissioner.is_none());
}

// ---- Outside TA539: not eligible, and the route falls to IFR / IPFR ----

#[tokio::test]
async fn grade_3_gep_net_is_not_eligible_and_falls_to_ifr_in_england() {
    // TA539 covers G1/G2 only; NETTER-2's G3 population is outside it (reference §14.4).
    let s = server().await;
    let patient = ta539_small_bowel().england().ki67(25.0);
    let e = s.eligibility_on(&patient, LU177, today()).await;
    assert_eq!(e.status(), Status::NotEligible);
    let grade = e
        .criteria
        .iter()
        .find(|c| c.criterion_id == "lutathera-grade-1-or-2")
        .expect("grade criterion");
    assert_eq!(grade.outcome(), CriterionOutcome::Unmet);
    assert!(
        grade
            .values_used
            .iter()
            .any(|v| v.field == "derived.who_grade" && v.value == "G3")
    );
    let f = s.funding_on(&patient, LU177, today()).await;
    assert_eq!(f.route(), Route::IndividualFundingRequest, "{}", f.summary);
}

#[tokio::test]
async fn grade_3_gep_net_in_wales_falls_to_ipfr() {
    let s = server().await;
    let f = s
        .funding_on(
            &ta539_small_bowel().south_wales().mitoses(25.0),
            LU177,
            today(),
        )
        .await;
    assert_eq!(
        f.route(),
        Route::IndividualPatientFundingRequest,
        "{}",
        f.summary
    );
    assert!(
        f.commissioner
            .as_ref()
            .is_some_and(|c| c.name.contains("IPFR"))
    );
}

#[tokio::test]
async fn stable_disease_is_not_eligible() {
    let s = server().await;
    let e = s
        .eligibility_on(
            &ta539_small_bowel().england().progressive(false),
            LU177,
            today(),
        )
        .await;
    assert_eq!(e.status(), Status::NotEligible);
    assert!(e.summary.contains("Progressive disease"), "{}", e.summary);
}

#[tokio::test]
async fn krenning_2_uptake_is_sstr_positive_and_flagged() {
    // Lutathera SmPC 4.2 (reference §16.1): uptake at least as high as normal liver; PRRT at
    // Krenning ≥ 3 is usual but disputed (§0.3, §14.7): a review flag, not a boundary.
    let s = server().await;
    let patient = ta539_small_bowel().england().krenning(2);
    let e = s.eligibility_on(&patient, LU177, today()).await;
    assert_eq!(e.status(), Status::Eligible);
    assert!(flag_ids(&e).contains(&"prrt-krenning-below-3"));
    let f = s.funding_on(&patient, LU177, today()).await;
    assert_eq!(f.route(), Route::RoutinelyCommissionedNiceTa);
    let below = s
        .eligibility_on(&ta539_small_bowel().england().krenning(1), LU177, today())
        .await;
    assert_eq!(below.status(), Status::NotEligible);
}

#[tokio::test]
async fn poorly_differentiated_nec_is_not_eligible() {
    let s = server().await;
    let patient = ta539_small_bowel()
        .england()
        .poorly_differentiated()
        .ki67(60.0);
    let e = s.eligibility_on(&patient, LU177, today()).await;
    assert_eq!(e.status(), Status::NotEligible);
}

#[tokio::test]
async fn a_patient_becomes_an_adult_on_their_18th_birthday() {
    // TA539: adults. Born 2008-06-02: 17 on 2026-06-01, 18 from 2026-06-02.
    let s = server().await;
    let mut patient = ta539_small_bowel().england().born(date(2008, 6, 2));
    patient
        .0
        .demographics
        .as_mut()
        .expect("demographics")
        .age_years = None;
    let minor = s.eligibility_on(&patient, LU177, date(2026, 6, 1)).await;
    let adult = s.eligibility_on(&patient, LU177, date(2026, 6, 2)).await;
    assert_eq!(minor.status(), Status::NotEligible, "{}", minor.summary);
    assert_eq!(adult.status(), Status::Eligible, "{}", adult.summary);
}

// ---- Missing data: INDETERMINATE, naming exactly what would settle it ----

#[tokio::test]
async fn no_grade_inputs_is_indeterminate_naming_them() {
    let s = server().await;
    let mut patient = ta539_small_bowel().england();
    patient.0.tumour.as_mut().expect("tumour").ki67_percent = None;
    let e = s.eligibility_on(&patient, LU177, today()).await;
    assert_eq!(e.status(), Status::Indeterminate);
    assert_eq!(
        e.missing_inputs,
        vec![
            "patient.tumour.who_grade",
            "patient.tumour.ki67_percent",
            "patient.tumour.mitoses_per_2mm2"
        ]
    );
    let f = s.funding_on(&patient, LU177, today()).await;
    assert_eq!(f.route(), Route::Undetermined);
    assert_eq!(f.missing_inputs, e.missing_inputs);
}

#[tokio::test]
async fn missing_sstr_imaging_is_indeterminate_naming_the_krenning_score() {
    let s = server().await;
    let mut patient = ta539_small_bowel().england();
    patient.0.imaging = None;
    let e = s.eligibility_on(&patient, LU177, today()).await;
    assert_eq!(e.status(), Status::Indeterminate);
    assert_eq!(
        e.missing_inputs,
        vec![
            "patient.imaging.krenning_score",
            "patient.imaging.sstr_positive"
        ]
    );
}

#[tokio::test]
async fn an_empty_profile_names_every_required_input() {
    let s = server().await;
    let e = s.eligibility_on(&Patient::new(), LU177, today()).await;
    assert_eq!(e.status(), Status::Indeterminate);
    for input in [
        "patient.demographics.age_years",
        "patient.extent.extent",
        "patient.progression.progressive",
        "patient.tumour.differentiation",
        "patient.imaging.krenning_score",
    ] {
        assert!(
            e.missing_inputs.iter().any(|m| m == input),
            "{input} missing from {:?}",
            e.missing_inputs
        );
    }
}

// ---- Absolute contraindications (clinical README position 3) ----

#[tokio::test]
async fn pregnancy_and_breastfeeding_make_lu177_not_eligible() {
    let s = server().await;
    for patient in [
        ta539_small_bowel().england().female().pregnant(true),
        ta539_small_bowel()
            .england()
            .female()
            .pregnant(false)
            .breastfeeding(true),
    ] {
        let e = s.eligibility_on(&patient, LU177, today()).await;
        assert_eq!(e.status(), Status::NotEligible, "{}", e.summary);
        assert!(
            e.summary.contains("absolute contraindication"),
            "{}",
            e.summary
        );
    }
}

#[tokio::test]
async fn unrecorded_pregnancy_status_is_flagged_for_review_and_male_sex_settles_it() {
    let s = server().await;
    let unknown = s
        .eligibility_on(&ta539_small_bowel().england().female(), LU177, today())
        .await;
    assert_eq!(unknown.status(), Status::Eligible);
    assert!(flag_ids(&unknown).contains(&"radionuclide-pregnancy"));
    let male = s
        .eligibility_on(&ta539_small_bowel().england().male(), LU177, today())
        .await;
    assert!(!flag_ids(&male).contains(&"radionuclide-pregnancy"));
}

// ---- Safety flags: numbers are policy parameters, flags ask for specialist review ----

#[tokio::test]
async fn renal_function_below_50_is_flagged_for_review_and_below_30_as_withhold() {
    // Reference §3 / §14.8: > 50 preferred (UpToDate); < 30 outside the routine pathway (NCCP).
    let s = server().await;
    let moderate = ta539_small_bowel()
        .england()
        .male()
        .labs(|l| l.creatinine_clearance_ml_per_min = Some(45.0));
    let e = s.eligibility_on(&moderate, LU177, today()).await;
    assert_eq!(
        e.status(),
        Status::Eligible,
        "renal limits are flags, not exclusions"
    );
    let flag = e
        .safety_flags
        .iter()
        .find(|f| f.flag_id == "radionuclide-renal-review")
        .expect("renal flag");
    assert_eq!(flag.severity(), SafetyFlagSeverity::Review);
    assert_eq!(flag.value, "45 mL/min");
    assert_eq!(flag.threshold, "< 50 mL/min");
    assert_eq!(flag.field, "patient.labs.creatinine_clearance_ml_per_min");
    assert!(!flag_ids(&e).contains(&"radionuclide-renal-severe"));

    let severe = ta539_small_bowel()
        .england()
        .male()
        .labs(|l| l.egfr_ml_per_min_per_1_73m2 = Some(25.0));
    let e = s.eligibility_on(&severe, LU177, today()).await;
    let flag = e
        .safety_flags
        .iter()
        .find(|f| f.flag_id == "radionuclide-renal-severe")
        .expect("severe renal flag from eGFR");
    assert_eq!(flag.severity(), SafetyFlagSeverity::Withhold);
    assert_eq!(flag.field, "patient.labs.egfr_ml_per_min_per_1_73m2");
}

#[tokio::test]
async fn dialysis_holds_the_therapy_for_a_specialist_and_never_refuses_it() {
    // BNMS (reference §14.8): dialysis alone is no reason to refuse radionuclide therapy; NCCP
    // (§3) puts it outside the routine pathway: held until a specialist clears it (position 10).
    let s = server().await;
    let e = s
        .eligibility_on(
            &ta539_small_bowel()
                .england()
                .male()
                .labs(|l| l.on_dialysis = Some(true)),
            LU177,
            today(),
        )
        .await;
    assert_eq!(e.status(), Status::Held);
    assert!(flag_ids(&e).contains(&"radionuclide-dialysis"));
}

#[tokio::test]
async fn an_egfr_standing_in_for_creatinine_clearance_says_so() {
    // Reference §14.8: the renal thresholds are for creatinine clearance; eGFR is an estimate
    // of another measure, so a flag raised on it must say which measure it read.
    let s = server().await;
    let patient = ta539_small_bowel()
        .england()
        .labs(|l| l.egfr_ml_per_min_per_1_73m2 = Some(45.0));
    let e = s.eligibility_on(&patient, LU177, today()).await;
    let flag = e
        .safety_flags
        .iter()
        .find(|f| f.flag_id == "radionuclide-renal-review")
        .expect("renal flag");
    assert_eq!(flag.field, "patient.labs.egfr_ml_per_min_per_1_73m2");
    assert!(
        flag.value.contains("eGFR, not creatinine clearance"),
        "{}",
        flag.value
    );
    let measured = ta539_small_bowel()
        .england()
        .labs(|l| l.creatinine_clearance_ml_per_min = Some(45.0));
    let e = s.eligibility_on(&measured, LU177, today()).await;
    let flag = e
        .safety_flags
        .iter()
        .find(|f| f.flag_id == "radionuclide-renal-review")
        .expect("renal flag");
    assert_eq!(flag.value, "45 mL/min");
}

/// Typed values: a program reads a value and its limit as numbers with UCUM units, not text.
/// The TA539 patient with platelets of 60 x10^9/L: the withhold flag (limit < 75, the policy's
/// parameter from the SmPC, flagged to verify) carries 60 "10*9/L" against LESS_THAN 75
/// "10*9/L", and the grade criterion reads Ki-67 8 "%".
#[tokio::test]
async fn values_and_limits_come_as_numbers_with_ucum_units() {
    let s = server().await;
    let patient = ta539_small_bowel()
        .england()
        .labs(|l| l.platelets_10e9_per_l = Some(60.0));
    let e = s.eligibility_on(&patient, LU177, today()).await;
    let flag = e
        .safety_flags
        .iter()
        .find(|f| f.flag_id == "radionuclide-platelets")
        .expect("platelet flag");
    let quantity = |value: f64, unit: &str| pb::Quantity {
        value,
        unit: unit.into(),
    };
    assert_eq!(flag.value, "60 x10^9/L", "the text stays for people");
    assert_eq!(flag.measured, Some(quantity(60.0, "10*9/L")));
    assert_eq!(
        flag.limit,
        Some(pb::Limit {
            comparison: pb::Comparison::LessThan as i32,
            quantity: Some(quantity(75.0, "10*9/L")),
        })
    );
    let ki67 = e
        .criteria
        .iter()
        .flat_map(|c| &c.values_used)
        .find(|v| v.field == "patient.tumour.ki67_percent")
        .expect("Ki-67 used");
    assert_eq!(ki67.value, "8 %");
    assert_eq!(ki67.quantity, Some(quantity(8.0, "%")));
    // A value that is not a number has no quantity.
    let nation = e
        .criteria
        .iter()
        .flat_map(|c| &c.values_used)
        .find(|v| v.field == "patient.demographics.nation");
    assert!(nation.is_none_or(|v| v.quantity.is_none()), "{nation:?}");
}

#[tokio::test]
#[allow(deprecated)] // Reads the flags' inline sources, the default form.
async fn low_blood_counts_raise_withhold_flags() {
    let s = server().await;
    let patient = ta539_small_bowel().england().male().labs(|l| {
        l.haemoglobin_g_per_l = Some(75.0);
        l.platelets_10e9_per_l = Some(60.0);
        l.white_cell_count_10e9_per_l = Some(1.5);
        l.neutrophils_10e9_per_l = Some(0.8);
    });
    let e = s.eligibility_on(&patient, LU177, today()).await;
    // Position 10: a withhold flag holds the therapy; reading the status alone shows it.
    assert_eq!(e.status(), Status::Held);
    assert!(e.summary.starts_with("Held"), "{}", e.summary);
    for id in [
        "radionuclide-haemoglobin",
        "radionuclide-platelets",
        "radionuclide-white-cells",
        "radionuclide-neutrophils",
    ] {
        let flag = e
            .safety_flags
            .iter()
            .find(|f| f.flag_id == id)
            .unwrap_or_else(|| panic!("{id} flag"));
        assert_eq!(flag.severity(), SafetyFlagSeverity::Withhold, "{id}");
        assert!(flag.source.is_some(), "{id} cites a source");
    }
}

#[tokio::test]
async fn normal_blood_counts_raise_no_flags() {
    let s = server().await;
    let patient = ta539_small_bowel().england().male().labs(|l| {
        l.haemoglobin_g_per_l = Some(130.0);
        l.platelets_10e9_per_l = Some(250.0);
        l.white_cell_count_10e9_per_l = Some(6.0);
        l.neutrophils_10e9_per_l = Some(4.0);
        l.creatinine_clearance_ml_per_min = Some(90.0);
    });
    let e = s.eligibility_on(&patient, LU177, today()).await;
    // The fixture records no scan dates, so only the flags saying so may stand.
    assert!(
        flag_ids(&e)
            .iter()
            .all(|id| ["progression-undated", "sstr-scan-undated"].contains(id)),
        "{:?}",
        flag_ids(&e)
    );
}

#[tokio::test]
async fn liver_function_flags_use_the_laboratory_upper_limit() {
    let s = server().await;
    let patient = ta539_small_bowel().england().male().labs(|l| {
        l.bilirubin_umol_per_l = Some(70.0);
        l.bilirubin_upper_limit_umol_per_l = Some(21.0);
        l.albumin_g_per_l = Some(28.0);
    });
    let e = s.eligibility_on(&patient, LU177, today()).await;
    let ids = flag_ids(&e);
    assert!(
        ids.contains(&"prrt-bilirubin") && ids.contains(&"prrt-albumin"),
        "{ids:?}"
    );
    let within = ta539_small_bowel().england().male().labs(|l| {
        l.bilirubin_umol_per_l = Some(60.0);
        l.bilirubin_upper_limit_umol_per_l = Some(21.0);
    });
    assert!(
        !flag_ids(&s.eligibility_on(&within, LU177, today()).await).contains(&"prrt-bilirubin"),
        "60 < 3 x 21"
    );
}

#[tokio::test]
async fn performance_status_and_life_expectancy_flags() {
    let s = server().await;
    let patient = ta539_small_bowel()
        .england()
        .male()
        .karnofsky(50)
        .ecog(3)
        .life_expectancy_months(2);
    let e = s.eligibility_on(&patient, LU177, today()).await;
    let ids = flag_ids(&e);
    for id in ["prrt-karnofsky", "prrt-ecog", "prrt-life-expectancy"] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
}

#[tokio::test]
async fn imaging_marrow_and_radiation_protection_flags() {
    let s = server().await;
    let patient = ta539_small_bowel()
        .england()
        .male()
        .fdg_positive_sstr_negative()
        .marrow_irradiated_percent(30.0)
        .cannot_follow_radiation_precautions()
        .on_long_acting_ssa()
        .sstr_scan_on(date(2026, 3, 1));
    let e = s.eligibility_on(&patient, LU177, today()).await;
    let ids = flag_ids(&e);
    for id in [
        "prrt-fdg-discordant",
        "prrt-marrow-radiotherapy",
        "radionuclide-radiation-precautions",
        "prrt-long-acting-ssa",
        "prrt-sstr-scan-age",
    ] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    let ssa = e
        .safety_flags
        .iter()
        .find(|f| f.flag_id == "prrt-long-acting-ssa")
        .expect("ssa flag");
    assert_eq!(ssa.severity(), SafetyFlagSeverity::Info);
    // The four above that need review, and progression recorded without its scan date.
    assert!(flag_ids(&e).contains(&"progression-undated"));
    assert!(e.summary.contains("5 safety flag(s)"), "{}", e.summary);
}

// ---- Grades (clinical README position 6) ----

#[tokio::test]
async fn stated_g1_with_ki67_8_percent_is_flagged_and_graded_g2() {
    let s = server().await;
    let patient = ta539_small_bowel()
        .england()
        .male()
        .stated_grade(pb::WhoGrade::G1);
    let response = s
        .client
        .evaluate_eligibility(pb::EvaluateEligibilityRequest {
            patient: Some(Box::new(patient.profile())),
            therapies: vec![LU177 as i32],
            ..Default::default()
        })
        .await
        .expect("evaluate");
    let derived = response.derived.expect("derived findings in the FULL view");
    assert_eq!(derived.who_grade(), pb::WhoGrade::G2);
    assert_eq!(derived.gep_classification(), pb::GepClassification::Gep);
    let e = &response.therapies[0];
    assert_eq!(e.status(), Status::Eligible);
    assert!(flag_ids(e).contains(&"grade-conflict"));
}

#[tokio::test]
async fn stated_g2_with_ki67_25_percent_uses_g3_and_is_not_eligible() {
    let s = server().await;
    let patient = ta539_small_bowel()
        .england()
        .stated_grade(pb::WhoGrade::G2)
        .ki67(25.0);
    let e = s.eligibility_on(&patient, LU177, today()).await;
    assert_eq!(e.status(), Status::NotEligible);
    assert!(flag_ids(&e).contains(&"grade-conflict"));
}

#[tokio::test]
async fn lung_typical_carcinoid_from_mitoses_and_no_necrosis_counts_as_g1() {
    // Reference §0.2: < 2 mitoses per 2 mm² and no necrosis = typical carcinoid = G1.
    let s = server().await;
    let mut patient = ta539_small_bowel()
        .england()
        .primary(PrimarySite::Lung)
        .mitoses(1.0);
    let tumour = patient.0.tumour.as_mut().expect("tumour");
    tumour.ki67_percent = None;
    tumour.necrosis = Some(false);
    let e = s.eligibility_on(&patient, LU177, today()).await;
    assert_eq!(e.status(), Status::Eligible, "{}", e.summary);
}

// ---- Views and provenance ----

#[tokio::test]
async fn basic_view_answers_status_and_route_only() {
    let s = server().await;
    let patient = ta539_small_bowel().england();
    let e = s
        .client
        .evaluate_eligibility(pb::EvaluateEligibilityRequest {
            patient: Some(Box::new(patient.profile())),
            view: pb::EvaluationView::Basic as i32,
            ..Default::default()
        })
        .await
        .expect("evaluate");
    assert_eq!(e.therapies.len(), 14, "every therapy when none is named");
    assert!(e.derived.is_none());
    let lu = e
        .therapies
        .iter()
        .find(|t| t.therapy() == LU177)
        .expect("Lu-177");
    assert_eq!(lu.status(), Status::Eligible);
    assert!(lu.criteria.is_empty() && lu.safety_flags.is_empty() && lu.deciding_mdt.is_none());
    assert!(
        e.therapies
            .iter()
            .all(|t| t.summary.is_empty() && t.missing_inputs.is_empty()),
        "BASIC leaves why to FULL: {:?}",
        e.therapies
    );

    let f = s
        .client
        .classify_funding(pb::ClassifyFundingRequest {
            patient: Some(Box::new(patient.profile())),
            therapies: vec![LU177 as i32],
            view: pb::EvaluationView::Basic as i32,
            ..Default::default()
        })
        .await
        .expect("classify");
    let lu = &f.therapies[0];
    assert_eq!(lu.route(), Route::RoutinelyCommissionedNiceTa);
    assert_eq!(lu.route_id, "lu177.england.ta539");
    assert_eq!(lu.nation(), pb::Nation::England);
    assert!(lu.commissioner.is_none() && lu.criteria.is_empty() && lu.delivery_sites.is_empty());
    assert!(lu.summary.is_empty() && lu.missing_inputs.is_empty());
}

#[tokio::test]
async fn a_basic_answer_gives_the_full_ones_status_and_leaves_why_to_full() {
    // Krenning 1: uptake below the liver, so PRRT cannot target the tumour (TA539 needs
    // SSTR-positive disease; the policy asks for Krenning ≥ 3, reference §0.3). BASIC says
    // NOT_ELIGIBLE for every therapy FULL does; FULL's summary quotes the reason.
    let s = server().await;
    let patient = ta539_small_bowel().england().krenning(1);
    let ask = |view: pb::EvaluationView| pb::EvaluateEligibilityRequest {
        patient: Some(Box::new(patient.profile())),
        view: view as i32,
        ..Default::default()
    };
    let basic = s
        .client
        .evaluate_eligibility(ask(pb::EvaluationView::Basic))
        .await
        .expect("basic");
    let full = s
        .client
        .evaluate_eligibility(ask(pb::EvaluationView::Full))
        .await
        .expect("full");
    assert_eq!(basic.therapies.len(), full.therapies.len());
    for (b, f) in basic.therapies.iter().zip(&full.therapies) {
        assert_eq!((b.therapy, b.status), (f.therapy, f.status));
        assert!(
            b.summary.is_empty() && !f.summary.is_empty(),
            "{:?}",
            b.therapy()
        );
    }
    let lu = |answer: &pb::EvaluateEligibilityResponse| {
        answer
            .therapies
            .iter()
            .find(|t| t.therapy() == LU177)
            .cloned()
            .expect("Lu-177")
    };
    assert_eq!(lu(&basic).status(), Status::NotEligible);
    let why = lu(&full).summary;
    assert!(
        why.contains("Krenning score 1; needs ≥ 2"),
        "the FULL summary quotes the unmet criterion's finding: {why}"
    );
}

/// Position 3 and 11: eligibility follows the licence, and cites it. A shared answer cites each
/// source once and each criterion's statement once; the inline form (deprecated) carries the
/// same words on every criterion.
#[tokio::test]
#[allow(deprecated)] // Compares the inline form with the shared one.
async fn every_criterion_cites_its_source_and_the_answer_names_the_policy() {
    let s = server().await;
    let ask = |request_id: &str, citations: pb::CitationStyle| pb::EvaluateEligibilityRequest {
        request_id: request_id.into(),
        patient: Some(Box::new(ta539_small_bowel().england().profile())),
        therapies: vec![LU177 as i32],
        citations: citations as i32,
        ..Default::default()
    };
    let response = s
        .client
        .evaluate_eligibility(ask(
            "0b0e1c4e-5f5a-4d8e-9d3c-2f1e6a7b8c9d",
            pb::CitationStyle::Shared,
        ))
        .await
        .expect("evaluate");
    assert_eq!(response.request_id, "0b0e1c4e-5f5a-4d8e-9d3c-2f1e6a7b8c9d");
    let policy = response.policy.as_ref().expect("policy reference");
    assert_eq!(
        policy.version,
        net_pathway::engine::Policy::bundled()
            .expect("bundled")
            .version
    );
    assert!(policy.content_hash.starts_with("sha256:") && policy.content_hash.len() == 7 + 64);
    let statement = |id: &str| {
        response
            .statements
            .iter()
            .find(|st| st.criterion_id == id)
            .unwrap_or_else(|| panic!("no statement for {id}"))
    };
    let source = |id: &str| {
        response
            .sources
            .iter()
            .find(|so| so.id == id)
            .unwrap_or_else(|| panic!("no source {id}"))
    };
    let adult = source(&statement("lutathera-adult").source_id);
    assert!(
        adult.document.starts_with("Lutathera"),
        "{}",
        adult.document
    );
    assert!(adult.section.contains("4.1"), "{}", adult.section);
    assert_eq!(
        adult.url,
        "https://www.ema.europa.eu/en/medicines/human/EPAR/lutathera"
    );
    let criteria = &response.therapies[0].criteria;
    for c in criteria {
        assert!(c.description.is_empty() && c.source.is_none(), "{c:?}");
        assert!(!statement(&c.criterion_id).description.is_empty());
        source(&statement(&c.criterion_id).source_id);
    }
    let once =
        |ids: Vec<&str>| ids.len() == ids.iter().collect::<std::collections::HashSet<_>>().len();
    assert!(once(
        response.sources.iter().map(|so| so.id.as_str()).collect()
    ));
    assert!(once(
        response
            .statements
            .iter()
            .map(|st| st.criterion_id.as_str())
            .collect()
    ));

    let inline = s
        .client
        .evaluate_eligibility(ask(
            "6f1d8a52-3c1b-4e0f-9a77-0d2b4c6e8f10",
            pb::CitationStyle::Inline,
        ))
        .await
        .expect("evaluate");
    assert!(inline.sources.is_empty() && inline.statements.is_empty());
    assert_eq!(inline.therapies[0].criteria.len(), criteria.len());
    for (inlined, shared) in inline.therapies[0].criteria.iter().zip(criteria) {
        let said = statement(&shared.criterion_id);
        assert_eq!(inlined.criterion_id, shared.criterion_id);
        assert_eq!(inlined.description, said.description);
        assert_eq!(inlined.source.as_ref(), Some(source(&said.source_id)));
    }
}

#[tokio::test]
async fn a_therapy_the_policy_does_not_decide_is_indeterminate_with_the_reason_never_a_guess() {
    // A policy without its SIRT section: SIRT must answer INDETERMINATE / UNDETERMINED.
    let bundled = include_str!("../../policy/net-pathway.toml");
    let start = bundled
        .find("[[therapies]]\ntherapy = \"sirt\"")
        .expect("SIRT section");
    let end = start + bundled[start..].find("# -----").expect("section end");
    let without_sirt = format!("{}{}", &bundled[..start], &bundled[end..]);
    let policy = net_pathway::engine::Policy::parse("without-sirt.toml", &without_sirt)
        .expect("valid policy");
    let s = server_with(policy).await;
    let patient = ta539_small_bowel().england();
    let e = s.eligibility_on(&patient, Therapy::Sirt, today()).await;
    assert_eq!(e.status(), Status::Indeterminate);
    assert!(e.summary.contains("does not yet decide"), "{}", e.summary);
    let f = s.funding_on(&patient, Therapy::Sirt, today()).await;
    assert_eq!(f.route(), Route::Undetermined);
    assert!(f.summary.contains("does not yet decide"), "{}", f.summary);
}
