//! Properties of the bundled policy over generated patients (issue: clinical safety): the hard
//! stops hold for every patient, not only for the written cases.

use chrono::NaiveDate;
use proptest::prelude::*;

use super::finding::{Detail, Outcome};
use super::policy::{Evidence, FundingRoute, Policy, Role, Severity, Status};
use crate::domain::*;

fn policy() -> &'static Policy {
    static POLICY: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
    POLICY.get_or_init(|| Policy::bundled().unwrap_or_else(|e| panic!("{e}")))
}

fn pick<T: Copy + std::fmt::Debug + 'static>(
    all: &'static [T],
) -> impl Strategy<Value = Option<T>> {
    proptest::option::of(proptest::sample::select(all))
}

fn patient() -> impl Strategy<Value = Patient> {
    let demographics = (
        pick(Nation::ALL),
        pick(WelshRegion::ALL),
        proptest::option::of(0..=100i32),
        proptest::option::of(any::<bool>()),
    );
    let tumour = (
        pick(PrimarySite::ALL),
        pick(Differentiation::ALL),
        pick(WhoGrade::ALL),
        pick(GradingSystem::ALL),
        pick(LungClassification::ALL),
        proptest::option::of(0.0..=100.0f64),
        proptest::option::of(0.0..=60.0f64),
        proptest::option::of(any::<bool>()),
        pick(FunctionalSyndrome::ALL),
    );
    let disease = (
        pick(Extent::ALL),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0..=4i32),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0..=6i32),
        pick(SsaIndication::ALL),
    );
    let fitness = (
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0.0..=200.0f64),
        proptest::option::of(0.5..=3.0f64),
        proptest::option::of(any::<bool>()),
    );
    (demographics, tumour, disease, fitness).prop_map(|(d, t, x, f)| {
        let mut p = Patient::default();
        p.demographics.nation = d.0;
        p.demographics.welsh_region = d.1.filter(|_| d.0 == Some(Nation::Wales));
        p.demographics.age_years = d.2;
        p.demographics.pregnant = d.3;
        p.tumour.primary_site = t.0;
        p.tumour.differentiation = t.1;
        p.tumour.who_grade = t.2;
        p.tumour.grading_system = t.3;
        p.tumour.lung_classification =
            t.4.filter(|_| t.0.is_some_and(|s| s.uses_lung_classification()));
        p.tumour.ki67_percent = t.5;
        p.tumour.mitoses_per_2mm2 = t.6;
        p.tumour.necrosis = t.7;
        p.tumour.functional_syndrome = t.8;
        p.extent.extent = x.0;
        p.extent.resectable_with_curative_intent = x.1;
        p.extent.liver_dominant = x.2;
        p.progression.progressive = x.3;
        p.imaging.krenning_score = x.4;
        p.imaging.sstr_positive = x.5;
        if let Some(cycles) = x.6 {
            p.prior_treatments.push(PriorTreatment {
                therapy: Therapy::PrrtLu177Dotatate,
                start_date: None,
                end_date: None,
                cycles: Some(cycles),
                cumulative_activity_gbq: None,
                best_response: None,
            });
        }
        p.medication.ssa_indication = x.7;
        p.fitness.portal_vein_thrombosis = f.0;
        p.fitness.ascites = f.1;
        p.fitness.fit_for_surgery = f.2;
        p.labs.platelets_10e9_per_l = f.3;
        p.labs.inr = f.4;
        p.fitness.uncontrolled_hypertension = f.5;
        p
    })
}

/// Therapies whose sources restrict them to neuroendocrine tumours, not carcinomas: the
/// licences and TAs say well differentiated (reference §2, §3, §10, §11), RETNET a
/// biopsy-proven NET and IPG786 NETs metastatic to the liver (§12), PMC7423566 debulking of
/// NETs (§7).
const NET_ONLY: &[Therapy] = &[
    Therapy::SsaOctreotide,
    Therapy::SsaLanreotide,
    Therapy::PrrtLu177Dotatate,
    Therapy::PrrtY90,
    Therapy::Sunitinib,
    Therapy::Everolimus,
    Therapy::DebulkingSurgery,
    Therapy::LiverTae,
    Therapy::LiverTace,
    Therapy::Sirt,
];

fn as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 2).unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn a_carcinoma_is_never_eligible_for_a_therapy_restricted_to_nets(p in patient()) {
        let policy = policy();
        let facts = policy.facts(&p, as_of(), Detail::OUTCOME);
        let carcinoma = facts.grade.differentiation == Some(Differentiation::Poor)
            || facts.grade.grade == Some(WhoGrade::Nec);
        for &therapy in NET_ONLY.iter().filter(|_| carcinoma) {
            let answer = policy.eligibility(&facts, therapy);
            prop_assert!(
                !matches!(answer.status, Status::Eligible | Status::Held),
                "{therapy} is {:?} for a carcinoma: {:?}", answer.status, p.tumour
            );
        }
    }

    #[test]
    fn no_therapy_reads_eligible_while_a_withhold_flag_stands(p in patient()) {
        let policy = policy();
        let facts = policy.facts(&p, as_of(), Detail::EXPLAINED);
        for &therapy in Therapy::ALL {
            let answer = policy.eligibility(&facts, therapy);
            let withheld = answer.flags.iter().any(|f| f.severity == Severity::Withhold);
            prop_assert!(
                !(withheld && answer.status == Status::Eligible),
                "{therapy} reads ELIGIBLE with a withhold flag"
            );
            if withheld && answer.status != Status::NotEligible {
                prop_assert_eq!(answer.status, Status::Held);
            }
        }
    }

    #[test]
    fn a_contraindicated_therapy_has_no_funding_route(p in patient()) {
        let policy = policy();
        let facts = policy.facts(&p, as_of(), Detail::OUTCOME);
        for &therapy in Therapy::ALL {
            let Some(rules) = policy.therapies.get(&therapy) else { continue };
            let contraindicated = rules.eligibility.iter().any(|&c| {
                policy.criteria[c].role == Role::Contraindication
                    && policy.finding(c, &facts).outcome == Outcome::Met
            });
            if contraindicated && p.demographics.nation.is_some() {
                prop_assert_eq!(policy.eligibility(&facts, therapy).status, Status::NotEligible);
                prop_assert_eq!(policy.funding(&facts, therapy).route, FundingRoute::Contraindicated);
            }
        }
    }

    #[test]
    fn a_child_is_never_routed_to_an_adult_service(p in patient()) {
        let policy = policy();
        let facts = policy.facts(&p, as_of(), Detail::EXPLAINED);
        if facts.age.is_some_and(|a| a < 18) && p.demographics.nation.is_some() {
            for &therapy in Therapy::ALL {
                let funding = policy.funding(&facts, therapy);
                prop_assert!(
                    matches!(funding.route, FundingRoute::MdtDecision | FundingRoute::Contraindicated),
                    "{therapy}: {:?} for a child", funding.route
                );
                prop_assert!(funding.sites.is_empty(), "{therapy}: adult delivery sites for a child");
                prop_assert_eq!(policy.mdts[funding.mdt].id.as_str(), "paediatric-oncology-mdt");
            }
        }
    }

    #[test]
    fn a_site_outside_the_who_grading_never_waits_for_a_grade(p in patient()) {
        let policy = policy();
        let facts = policy.facts(&p, as_of(), Detail::OUTCOME);
        if !p.has_who_grade() {
            for &therapy in Therapy::ALL {
                let answer = policy.eligibility(&facts, therapy);
                for input in [
                    "patient.tumour.ki67_percent",
                    "patient.tumour.mitoses_per_2mm2",
                    "patient.tumour.who_grade",
                ] {
                    prop_assert!(!answer.missing.contains(&input), "{therapy} asks for {input}");
                }
            }
        }
    }
}

#[test]
fn every_criterion_cites_a_source_that_resolves_and_is_verified_unless_it_says_so() {
    let policy = policy();
    for c in &policy.criteria {
        let source = policy.sources.get(c.source);
        assert!(
            source.is_some(),
            "criterion '{}' cites no known source",
            c.id
        );
        if let Some(s) = source {
            assert!(
                !s.document.trim().is_empty(),
                "source '{}' names no document",
                s.id
            );
            assert!(
                s.evidence != Evidence::ToVerify || c.to_verify,
                "criterion '{}' cites '{}', tagged to verify, without saying so",
                c.id,
                s.id
            );
        }
    }
}

#[test]
fn a_criterion_to_verify_raises_a_review_flag_when_it_decides() {
    // Octreotide's adult age rule rests on licence wording to verify (reference §2).
    let policy = policy();
    let mut p = Patient::default();
    p.demographics.nation = Some(Nation::England);
    p.demographics.age_years = Some(60);
    let facts = policy.facts(&p, as_of(), Detail::EXPLAINED);
    let answer = policy.eligibility(&facts, Therapy::SsaOctreotide);
    let flagged: Vec<&str> = answer
        .flags
        .iter()
        .filter(|f| f.severity == Severity::Review)
        .map(|f| policy.criteria[f.criterion].id.as_str())
        .collect();
    assert!(flagged.contains(&"octreotide-adult"), "{flagged:?}");
}

#[test]
fn criteria_cite_the_document_that_says_them() {
    // Position 11: eligibility for Lu-177 rests on its licence, sunitinib and everolimus on
    // TA449, Y-90's analogy with Lu-177 on a source to verify.
    let policy = policy();
    let cites = |id: &str| {
        let c = policy
            .criteria
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("criterion {id}"));
        policy.sources[c.source].id.as_str()
    };
    for (prefix, source) in [
        ("lutathera-", "lutathera-smpc"),
        ("ta449-", "nice-ta449"),
        ("lanreotide-", "lanreotide-licence"),
    ] {
        let matching: Vec<&str> = policy
            .criteria
            .iter()
            .filter(|c| c.id.starts_with(prefix))
            .map(|c| c.id.as_str())
            .collect();
        assert!(!matching.is_empty(), "{prefix}");
        for id in matching {
            assert_eq!(cites(id), source, "{id}");
        }
    }
    assert_eq!(cites("y90-selection"), "y90-by-analogy");
    assert_eq!(cites("sact-pregnancy-review"), "sact-pregnancy");
    assert_eq!(cites("ssa-pregnancy-review"), "ssa-pregnancy");
    assert_eq!(cites("liver-directed-net"), "retnet");
    assert_eq!(cites("everolimus-pregnancy"), "everolimus-safety");
    assert_eq!(cites("marrow-neutrophils"), "sact-fitness");
    assert_eq!(cites("marrow-platelets"), "sact-fitness");
    assert_eq!(cites("y90-sstr-positive"), "y90-by-analogy");
    assert_eq!(cites("y90-nephrotoxicity"), "uptodate-prrt");
    assert_eq!(cites("sstr-below-liver"), "krenning-score");
    assert_eq!(cites("bone-metastases"), "radiotherapy-indications");
    assert_eq!(cites("sirt-ascites"), "sirt-criteria");
    assert_eq!(cites("sirt-bilirubin"), "sirt-criteria");
    assert_eq!(cites("sirt-net"), "nice-ipg786");
    assert_eq!(
        policy
            .sources
            .iter()
            .find(|s| s.id == "nice-ipg786")
            .and_then(|s| s.published),
        NaiveDate::from_ymd_opt(2024, 5, 16)
    );
    // No therapy's eligibility rests on TA539's own criteria: TA539 decides funding routes.
    for therapy in Therapy::ALL {
        if let Some(rules) = policy.therapies.get(therapy) {
            for &c in &rules.eligibility {
                assert_ne!(
                    policy.sources[policy.criteria[c].source].id, "nice-ta539",
                    "{therapy}: eligibility criterion '{}' cites TA539",
                    policy.criteria[c].id
                );
            }
        }
    }
}

#[test]
fn a_route_resting_on_a_source_to_verify_says_so() {
    // Reference §14.10: the SSA commissioner in England is assumed to be the ICB, to verify.
    let policy = policy();
    let mut p = Patient::default();
    p.demographics.nation = Some(Nation::England);
    p.demographics.age_years = Some(60);
    p.tumour.functional_syndrome = Some(FunctionalSyndrome::Carcinoid);
    p.tumour.differentiation = Some(Differentiation::Well);
    let facts = policy.facts(&p, as_of(), Detail::EXPLAINED);
    let funding = policy.funding(&facts, Therapy::SsaLanreotide);
    assert_eq!(funding.route, FundingRoute::RoutinelyCommissioned);
    assert!(
        funding
            .notes
            .iter()
            .any(|n| n.contains("rests on a source tagged to verify")),
        "{:?}",
        funding.notes
    );
}
