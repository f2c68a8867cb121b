//! The checks: small named tests over a [`Patient`], each answering MET, UNMET or UNKNOWN with
//! the values it used and the inputs it missed. The policy file names them (`catalogue`) and
//! supplies their parameters; this file is the only place that reads patient facts for a rule.

use chrono::NaiveDate;

use super::finding::{Detail, Finding, NOT_IN_POLICY, Outcome, Quantity, Shown, Text};
use super::grading::{DIFFERENTIATION, GradeAssessment, WHO_GRADE};
use crate::domain::{
    ChildPugh, Differentiation, Extent, ExtrahepaticSite, FunctionalSyndrome, MibgInterferingDrug,
    Nation, Patient, PrimarySite, Sex, SsaIndication, Therapy, WelshRegion, WhoGrade,
};

/// Formats an explanation or value only when the finding is explained.
macro_rules! why {
    ($d:expr, $($fmt:tt)+) => {
        $d.text(|| format!($($fmt)+))
    };
}

/// Labels joined as a list, for an explanation.
fn labels<'a, T: 'a>(
    items: impl IntoIterator<Item = &'a T>,
    label: fn(&T) -> &'static str,
) -> String {
    items.into_iter().map(label).collect::<Vec<_>>().join(", ")
}

/// A number and its unit, as a clinician would write it.
fn with_unit(d: Detail, v: f64, unit: &'static str) -> Text {
    d.text(|| format!("{v} {unit}").trim_end().to_string())
}

/// Everything a check may read: the patient, the as-of date and what was derived once per request.
pub struct Facts<'a> {
    pub patient: &'a Patient,
    pub as_of: NaiveDate,
    pub age: Option<i32>,
    pub(crate) grade: GradeAssessment,
    /// Registries (policy ids) in which the patient is actively enrolled, as the store says.
    /// Set before any criterion is evaluated: findings are remembered once made.
    pub registry_enrolments: Vec<String>,
    /// How much the answers built from these facts say.
    pub detail: Detail,
    /// Each criterion's finding at `detail`, made at most once per patient and date:
    /// eligibility, funding, MDT selection and delivery sites share most criteria.
    pub(crate) findings: Vec<std::cell::OnceCell<Finding>>,
    /// The MDT the policy's geographic rules select for this patient, for every therapy
    /// without a rule of its own: chosen once, not once per answer.
    pub geographic_mdt: std::cell::OnceCell<Option<usize>>,
}

impl Facts<'_> {
    /// The stand-in for a criterion that is not in the policy these facts were made for.
    pub(crate) fn not_in_policy() -> &'static Finding {
        &NOT_IN_POLICY
    }
}

/// How a value is compared with a check's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    LessThan,
    AtMost,
    GreaterThan,
    AtLeast,
}

/// A numeric patient input a threshold check may name in the policy file.
pub(crate) struct NumericInput {
    pub path: &'static str,
    /// The unit as a clinician writes it ("x10^9/L").
    pub unit: &'static str,
    /// The unit as a UCUM code ("10*9/L"), for the value's quantity.
    pub ucum: &'static str,
    read: fn(&Patient) -> Option<f64>,
}

impl NumericInput {
    /// A value of this input as a check shows it: text with unit, and its quantity.
    pub fn shown(&self, d: Detail, value: f64) -> Shown {
        Shown::measured(d, value, self.unit, self.ucum)
    }

    /// The measure's name as a clinician says it: the field name without units.
    pub fn measure(&self) -> &'static str {
        match self.path {
            "patient.labs.creatinine_clearance_ml_per_min" => "creatinine clearance",
            "patient.labs.egfr_ml_per_min_per_1_73m2" => "eGFR",
            path => path.rsplit('.').next().unwrap_or(path),
        }
    }
}

/// A yes/no patient input a check may name in the policy file.
pub(crate) struct BooleanInput {
    pub path: &'static str,
    read: fn(&Patient) -> Option<bool>,
}

/// A dated patient input a check may name in the policy file.
pub(crate) struct DateInput {
    pub path: &'static str,
    read: fn(&Patient) -> Option<NaiveDate>,
}

macro_rules! numeric {
    ($path:literal, $unit:literal, $ucum:literal, |$p:ident| $e:expr) => {
        NumericInput {
            path: concat!("patient.", $path),
            unit: $unit,
            ucum: $ucum,
            read: |$p| $e,
        }
    };
}

/// A numeric or dated input whose presence a check tests.
#[derive(Clone, Copy)]
pub(crate) enum RecordedInput {
    Numeric(&'static NumericInput),
    Date(&'static DateInput),
}

impl RecordedInput {
    fn path(self) -> &'static str {
        match self {
            RecordedInput::Numeric(i) => i.path,
            RecordedInput::Date(i) => i.path,
        }
    }

    fn present(self, p: &Patient) -> bool {
        match self {
            RecordedInput::Numeric(i) => (i.read)(p).is_some(),
            RecordedInput::Date(i) => (i.read)(p).is_some(),
        }
    }
}

/// Every numeric input a policy may threshold.
pub(crate) static NUMERIC_INPUTS: &[NumericInput] = &[
    numeric!("tumour.ki67_percent", "%", "%", |p| p.tumour.ki67_percent),
    numeric!(
        "tumour.mitoses_per_2mm2",
        "per 2 mm²",
        "{mitoses}/(2.mm2)",
        |p| p.tumour.mitoses_per_2mm2
    ),
    numeric!("tumour.primary_tumour_size_mm", "mm", "mm", |p| p
        .tumour
        .primary_tumour_size_mm),
    numeric!("extent.liver_burden_percent", "%", "%", |p| p
        .extent
        .liver_burden_percent),
    numeric!("extent.estimated_debulkable_percent", "%", "%", |p| p
        .extent
        .estimated_debulkable_percent),
    numeric!("imaging.krenning_score", "", "{score}", |p| p
        .imaging
        .krenning_score
        .map(f64::from)),
    numeric!("imaging.mibg_uptake_score", "", "{score}", |p| p
        .imaging
        .mibg_uptake_score
        .map(f64::from)),
    numeric!("fitness.ecog_performance_status", "", "{score}", |p| p
        .fitness
        .ecog_performance_status
        .map(f64::from)),
    numeric!("fitness.karnofsky_performance_status", "", "%", |p| p
        .fitness
        .karnofsky_performance_status
        .map(f64::from)),
    numeric!("fitness.life_expectancy_months", "months", "mo", |p| p
        .fitness
        .life_expectancy_months
        .map(f64::from)),
    numeric!("fitness.prior_marrow_radiotherapy_percent", "%", "%", |p| p
        .fitness
        .prior_marrow_radiotherapy_percent),
    numeric!("fitness.lvef_percent", "%", "%", |p| p.fitness.lvef_percent),
    numeric!("labs.haemoglobin_g_per_l", "g/L", "g/L", |p| p
        .labs
        .haemoglobin_g_per_l),
    numeric!("labs.platelets_10e9_per_l", "x10^9/L", "10*9/L", |p| p
        .labs
        .platelets_10e9_per_l),
    numeric!(
        "labs.white_cell_count_10e9_per_l",
        "x10^9/L",
        "10*9/L",
        |p| p.labs.white_cell_count_10e9_per_l
    ),
    numeric!("labs.neutrophils_10e9_per_l", "x10^9/L", "10*9/L", |p| p
        .labs
        .neutrophils_10e9_per_l),
    numeric!("labs.creatinine_umol_per_l", "µmol/L", "umol/L", |p| p
        .labs
        .creatinine_umol_per_l),
    numeric!(
        "labs.creatinine_clearance_ml_per_min",
        "mL/min",
        "mL/min",
        |p| p.labs.creatinine_clearance_ml_per_min
    ),
    numeric!(
        "labs.egfr_ml_per_min_per_1_73m2",
        "mL/min/1.73 m²",
        "mL/min/{1.73_m2}",
        |p| p.labs.egfr_ml_per_min_per_1_73m2
    ),
    numeric!("labs.bilirubin_umol_per_l", "µmol/L", "umol/L", |p| p
        .labs
        .bilirubin_umol_per_l),
    numeric!(
        "labs.bilirubin_upper_limit_umol_per_l",
        "µmol/L",
        "umol/L",
        |p| p.labs.bilirubin_upper_limit_umol_per_l
    ),
    numeric!("labs.albumin_g_per_l", "g/L", "g/L", |p| p
        .labs
        .albumin_g_per_l),
    numeric!("labs.inr", "", "{INR}", |p| p.labs.inr),
];

/// A yes/no or dated input: `input!(BooleanInput, "imaging.mibg_positive", |p| …)`.
macro_rules! input {
    ($kind:ident, $path:literal, |$p:ident| $e:expr) => {
        $kind {
            path: concat!("patient.", $path),
            read: |$p| $e,
        }
    };
}

/// Every yes/no input a policy may test.
pub(crate) static BOOLEAN_INPUTS: &[BooleanInput] = &[
    input!(
        BooleanInput,
        "imaging.fdg_positive_sstr_negative_lesion",
        |p| p.imaging.fdg_positive_sstr_negative_lesion
    ),
    input!(BooleanInput, "imaging.mibg_positive", |p| p
        .imaging
        .mibg_positive),
    input!(BooleanInput, "extent.liver_metastases", |p| p
        .extent
        .liver_metastases),
    input!(BooleanInput, "extent.liver_dominant", |p| p
        .extent
        .liver_dominant),
    input!(BooleanInput, "extent.bilobar_liver_disease", |p| p
        .extent
        .bilobar_liver_disease),
    input!(BooleanInput, "tumour.symptoms_controlled_on_ssa", |p| p
        .tumour
        .symptoms_controlled_on_ssa),
    input!(BooleanInput, "fitness.fit_for_surgery", |p| p
        .fitness
        .fit_for_surgery),
    input!(BooleanInput, "imaging.sstr_positive", |p| p
        .imaging
        .sstr_positive),
    input!(
        BooleanInput,
        "extent.resectable_with_curative_intent",
        |p| p.extent.resectable_with_curative_intent
    ),
    input!(BooleanInput, "medication.on_long_acting_ssa", |p| p
        .medication
        .on_long_acting_ssa),
    input!(
        BooleanInput,
        "fitness.can_follow_radiation_precautions",
        |p| p.fitness.can_follow_radiation_precautions
    ),
    input!(BooleanInput, "fitness.carcinoid_heart_disease", |p| p
        .fitness
        .carcinoid_heart_disease),
    input!(BooleanInput, "fitness.uncontrolled_hypertension", |p| p
        .fitness
        .uncontrolled_hypertension),
    input!(BooleanInput, "fitness.qt_prolongation_risk", |p| p
        .fitness
        .qt_prolongation_risk),
    input!(BooleanInput, "fitness.portal_vein_thrombosis", |p| p
        .fitness
        .portal_vein_thrombosis),
    input!(BooleanInput, "fitness.ascites", |p| p.fitness.ascites),
    input!(BooleanInput, "fitness.biliary_enteric_anastomosis", |p| p
        .fitness
        .biliary_enteric_anastomosis),
    input!(BooleanInput, "labs.on_dialysis", |p| p.labs.on_dialysis),
    input!(BooleanInput, "mdt.trial_or_registry_candidate", |p| p
        .mdt
        .trial_or_registry_candidate),
];

/// Every dated input a policy may age-check.
pub(crate) static DATE_INPUTS: &[DateInput] = &[
    input!(DateInput, "imaging.sstr_scan_date", |p| p
        .imaging
        .sstr_scan_date),
    input!(DateInput, "imaging.mibg_scan_date", |p| p
        .imaging
        .mibg_scan_date),
    input!(DateInput, "labs.collected_date", |p| p.labs.collected_date),
    input!(DateInput, "progression.progression_scan_date", |p| p
        .progression
        .progression_scan_date),
    input!(DateInput, "extent.resectability_mdt_date", |p| p
        .extent
        .resectability_mdt_date),
    input!(DateInput, "mdt.mdt_date", |p| p.mdt.mdt_date),
    input!(DateInput, "progression.baseline_scan_date", |p| p
        .progression
        .baseline_scan_date),
];

const AGE: &str = "patient.demographics.age_years";
const DATE_OF_BIRTH: &str = "patient.demographics.date_of_birth";
const NATION: &str = "patient.demographics.nation";
const WELSH_REGION: &str = "patient.demographics.welsh_region";
const WELSH_HEALTH_BOARD: &str = "patient.demographics.welsh_health_board";
/// Krenning 2 is uptake equal to normal liver: the level a "positive" read means (reference §16.1).
const LIVER_LEVEL_KRENNING: i32 = 2;
const PRIMARY_SITE: &str = "patient.tumour.primary_site";
const EXTENT: &str = "patient.extent.extent";
const RESECTABLE: &str = "patient.extent.resectable_with_curative_intent";
const PROGRESSIVE: &str = "patient.progression.progressive";
const KRENNING: &str = "patient.imaging.krenning_score";
const SSTR_POSITIVE: &str = "patient.imaging.sstr_positive";
const PRIOR_CYCLES: &str = "patient.prior_treatments.cycles";
const SSA_INDICATION: &str = "patient.medication.ssa_indication";
const PREGNANT: &str = "patient.demographics.pregnant";
const BREASTFEEDING: &str = "patient.demographics.breastfeeding";
const PRIOR_TREATMENTS: &str = "patient.prior_treatments";
const SYNDROME: &str = "patient.tumour.functional_syndrome";
const EXTRAHEPATIC: &str = "patient.extent.extrahepatic_sites";
const MIBG_DRUGS: &str = "patient.medication.mibg_interfering_drugs";
const CHILD_PUGH: &str = "patient.fitness.child_pugh";

/// A compiled check with its parameters.
pub(crate) enum Check {
    /// Age on the as-of date at least (or, with `at_least` false, under) `years`.
    Age {
        years: i32,
        at_least: bool,
    },
    PrimarySiteIn {
        sites: Vec<PrimarySite>,
    },
    UnresectableOrMetastatic,
    ProgressiveDisease,
    DifferentiationIn {
        accepted: Vec<Differentiation>,
    },
    GradeIn {
        grades: Vec<WhoGrade>,
    },
    /// SSTR uptake at least (or, with `at_least` false, below) a Krenning score; a scan read
    /// only as positive or negative settles thresholds at the liver level (score 2).
    Krenning {
        score: i32,
        at_least: bool,
    },
    /// A completed course of one of `therapies`: at least `administrations` given.
    PriorCompletedCourse {
        therapies: Vec<Therapy>,
        administrations: i32,
    },
    /// The somatostatin analogue indication asked for allows `indication` (none asked: any).
    SsaIndicationAllows {
        indication: SsaIndication,
    },
    /// A numeric input is recorded (never UNMET: absent is UNKNOWN).
    Recorded {
        input: &'static NumericInput,
    },
    /// An input is not recorded: MET when absent, UNMET when present, never UNKNOWN. For flags
    /// about evidence that cannot be checked (a score or a date missing).
    NotRecorded {
        input: RecordedInput,
    },
    PregnantOrBreastfeeding,
    PriorTherapyAnyOf {
        therapies: Vec<Therapy>,
    },
    NationIs {
        nation: Nation,
    },
    WelshRegionIs {
        region: WelshRegion,
    },
    ValueBelow {
        input: &'static NumericInput,
        fallback: Option<&'static NumericInput>,
        threshold: f64,
    },
    ValueAbove {
        input: &'static NumericInput,
        threshold: f64,
    },
    ValueAboveMultipleOf {
        input: &'static NumericInput,
        reference: &'static NumericInput,
        multiple: f64,
    },
    IsTrue {
        input: &'static BooleanInput,
    },
    IsFalse {
        input: &'static BooleanInput,
    },
    OlderThanDays {
        input: &'static DateInput,
        days: i64,
    },
    StatedGradeConflicts,
    ValueAtMost {
        input: &'static NumericInput,
        limit: f64,
    },
    ValueAtLeast {
        input: &'static NumericInput,
        limit: f64,
    },
    ExtentIn {
        extents: Vec<Extent>,
    },
    FunctionalSyndromeIn {
        syndromes: Vec<FunctionalSyndrome>,
    },
    ExtrahepaticSitesWithin {
        allowed: Vec<ExtrahepaticSite>,
    },
    ExtrahepaticSiteAnyOf {
        sites: Vec<ExtrahepaticSite>,
    },
    MibgInterferingDrugTaken,
    ChildPughIn {
        classes: Vec<ChildPugh>,
    },
    /// MET when any member is MET (members are criteria defined earlier in the policy).
    AnyOf {
        members: Vec<usize>,
    },
    /// MET when every member is MET.
    AllOf {
        members: Vec<usize>,
    },
    /// A composite as written, before its member ids are resolved by the loader.
    Composite {
        any: bool,
        names: Vec<String>,
    },
}

impl Check {
    /// The threshold as a clinician reads it, for safety flags.
    pub fn threshold_text(&self) -> String {
        match self {
            Check::ValueBelow {
                input, threshold, ..
            } => format!("< {threshold} {}", input.unit)
                .trim_end()
                .to_string(),
            Check::ValueAbove { input, threshold } => format!("> {threshold} {}", input.unit)
                .trim_end()
                .to_string(),
            Check::ValueAboveMultipleOf { multiple, .. } => {
                format!("> {multiple} x upper limit of normal")
            }
            Check::OlderThanDays { days, .. } => format!("older than {days} days"),
            Check::Krenning {
                score,
                at_least: true,
            } => format!("Krenning ≥ {score}"),
            Check::Krenning { score, .. } => format!("Krenning < {score}"),
            Check::Age {
                years,
                at_least: true,
            } => format!("age ≥ {years}"),
            Check::Age { years, .. } => format!("age < {years}"),
            Check::ValueAtMost { input, limit } => {
                format!("≤ {limit} {}", input.unit).trim_end().to_string()
            }
            Check::ValueAtLeast { input, limit } => {
                format!("≥ {limit} {}", input.unit).trim_end().to_string()
            }
            _ => String::new(),
        }
    }

    /// The limit a threshold check compares a value with, for programs: the comparison and
    /// the number in UCUM units (`threshold_text` says the same for people).
    pub fn limit(&self) -> Option<(Comparison, Quantity)> {
        let quantity = |value: f64, unit: &'static str| Quantity { value, unit };
        let at_least = |yes: bool| {
            if yes {
                Comparison::AtLeast
            } else {
                Comparison::LessThan
            }
        };
        Some(match self {
            Check::ValueBelow {
                input, threshold, ..
            } => (Comparison::LessThan, quantity(*threshold, input.ucum)),
            Check::ValueAbove { input, threshold } => {
                (Comparison::GreaterThan, quantity(*threshold, input.ucum))
            }
            Check::ValueAboveMultipleOf { multiple, .. } => {
                (Comparison::GreaterThan, quantity(*multiple, "{ULN}"))
            }
            Check::OlderThanDays { days, .. } => {
                // Days in a policy file are a handful of digits: exact as an f64.
                (Comparison::GreaterThan, quantity(*days as f64, "d"))
            }
            Check::Krenning { score, at_least: a } => {
                (at_least(*a), quantity(f64::from(*score), "{score}"))
            }
            Check::Age { years, at_least: a } => (at_least(*a), quantity(f64::from(*years), "a")),
            Check::ValueAtMost { input, limit } => {
                (Comparison::AtMost, quantity(*limit, input.ucum))
            }
            Check::ValueAtLeast { input, limit } => {
                (Comparison::AtLeast, quantity(*limit, input.ucum))
            }
            _ => return None,
        })
    }

    /// Evaluates the check on the facts, saying as much as `detail` asks; `member` evaluates
    /// another criterion of the policy at the same detail (for composites).
    pub fn evaluate<'f>(
        &self,
        f: &Facts,
        detail: Detail,
        member: &dyn Fn(usize) -> &'f Finding,
    ) -> Finding {
        let p = f.patient;
        match self {
            Check::AnyOf { members } => combine(detail, members.iter().map(|m| member(*m)), true),
            Check::AllOf { members } => combine(detail, members.iter().map(|m| member(*m)), false),
            Check::Composite { .. } => {
                detail.unknown(&[], "composite not resolved by the policy loader")
            }
            Check::ValueAtMost { input, limit } => match (input.read)(p) {
                Some(v) => detail
                    .decided(
                        v <= *limit,
                        why!(detail, "{v} {} against ≤ {limit}", input.unit),
                    )
                    .value(input.path, input.shown(detail, v)),
                None => detail.unknown(std::slice::from_ref(&input.path), "not recorded"),
            },
            Check::ValueAtLeast { input, limit } => match (input.read)(p) {
                Some(v) => detail
                    .decided(
                        v >= *limit,
                        why!(detail, "{v} {} against ≥ {limit}", input.unit),
                    )
                    .value(input.path, input.shown(detail, v)),
                None => detail.unknown(std::slice::from_ref(&input.path), "not recorded"),
            },
            Check::ExtentIn { extents } => match p.extent.extent {
                Some(e) => detail
                    .decided(extents.contains(&e), why!(detail, "disease is {e}"))
                    .value(EXTENT, e.label()),
                None => detail.unknown(&[EXTENT], "extent of disease not recorded"),
            },
            Check::FunctionalSyndromeIn { syndromes } => match p.tumour.functional_syndrome {
                Some(s) => detail
                    .decided(syndromes.contains(&s), why!(detail, "hormonal status: {s}"))
                    .value(SYNDROME, s.label()),
                None => detail.unknown(&[SYNDROME], "hormonal (functional) status not recorded"),
            },
            Check::ExtrahepaticSitesWithin { allowed } => extrahepatic_sites_within(detail, p, allowed),
            Check::ExtrahepaticSiteAnyOf { sites } => extrahepatic_site_any_of(detail, p, sites),
            Check::MibgInterferingDrugTaken => mibg_interfering_drug_taken(detail, p),
            Check::ChildPughIn { classes } => match p.fitness.child_pugh {
                Some(c) => detail
                    .decided(classes.contains(&c), c.label())
                    .value(CHILD_PUGH, c.label()),
                None => detail.unknown(&[CHILD_PUGH], "Child-Pugh class not recorded"),
            },
            Check::Age { years, at_least } => age(detail, f, p, years, at_least),
            Check::PrimarySiteIn { sites } => match p.tumour.primary_site {
                Some(site) => detail
                    .decided(
                        sites.contains(&site),
                        why!(detail, "primary site is {site}"),
                    )
                    .value(PRIMARY_SITE, site.label()),
                None => detail.unknown(&[PRIMARY_SITE], "primary site not recorded"),
            },
            Check::UnresectableOrMetastatic => unresectable_or_metastatic(detail, p),
            Check::ProgressiveDisease => progressive_disease(detail, p),
            // A stated differentiation still decides: only the grade has no meaning there.
            Check::DifferentiationIn { .. } if !p.has_who_grade() && f.grade.differentiation.is_none() => {
                detail.not_applicable(why!(
                    detail,
                    "{} is not graded by the WHO neuroendocrine grading and no differentiation is stated: its own criteria decide",
                    p.tumour.primary_site.map_or("", |s| s.label())
                ))
            }
            Check::GradeIn { .. } | Check::StatedGradeConflicts if !p.has_who_grade() => {
                detail.not_applicable(why!(
                    detail,
                    "{} is not graded by the WHO neuroendocrine grading: its own criteria decide",
                    p.tumour.primary_site.map_or("", |s| s.label())
                ))
            }
            Check::DifferentiationIn { accepted } => differentiation_in(detail, f, p, accepted),
            Check::GradeIn { grades } => grade_in(detail, f, grades),
            Check::Krenning { score, at_least } => krenning(detail, p, score, at_least),
            Check::PriorCompletedCourse { therapies, administrations, } => prior_completed_course(detail, p, therapies, administrations),
            Check::SsaIndicationAllows { indication } => match p.medication.ssa_indication {
                None => detail.decided(
                    true,
                    "no indication asked: symptom or tumour growth control may apply",
                ),
                Some(asked) => detail
                    .decided(
                        asked == *indication || asked == SsaIndication::SymptomAndTumourControl,
                        why!(detail, "asked for {asked}"),
                    )
                    .value(SSA_INDICATION, asked.label()),
            },
            Check::NotRecorded { input } => {
                let present = input.present(p);
                detail
                    .decided(!present, if present { "recorded" } else { "not recorded" })
                    .value(input.path(), if present { "recorded" } else { "not recorded" })
            }
            Check::Recorded { input } => match (input.read)(p) {
                Some(v) => detail
                    .decided(true, with_unit(detail, v, input.unit))
                    .value(input.path, input.shown(detail, v)),
                None => detail.unknown(std::slice::from_ref(&input.path), "not recorded"),
            },
            Check::PregnantOrBreastfeeding => pregnant_or_breastfeeding(detail, p),
            Check::PriorTherapyAnyOf { therapies } => prior_therapy_any_of(detail, p, therapies),
            Check::NationIs { nation } => match p.demographics.nation {
                Some(n) => detail
                    .decided(n == *nation, why!(detail, "nation is {n}"))
                    .value(NATION, n.label()),
                None => detail.unknown(&[NATION], "nation not recorded"),
            },
            Check::WelshRegionIs { region } => welsh_region_is(detail, p, region),
            Check::ValueBelow { input, fallback, threshold, } => value_below(detail, p, input, fallback, threshold),
            Check::ValueAbove { input, threshold } => match (input.read)(p) {
                Some(v) => detail
                    .decided(
                        v > *threshold,
                        why!(detail, "{v} {} against > {threshold}", input.unit),
                    )
                    .value(input.path, input.shown(detail, v)),
                None => detail.unknown(std::slice::from_ref(&input.path), "not recorded"),
            },
            Check::ValueAboveMultipleOf { input, reference, multiple, } => value_above_multiple_of(detail, p, input, reference, multiple),
            Check::IsTrue { input } | Check::IsFalse { input } => {
                let wanted = matches!(self, Check::IsTrue { .. });
                match (input.read)(p) {
                    Some(v) => detail
                        .decided(v == wanted, if v { "yes" } else { "no" })
                        .value(input.path, if v { "yes" } else { "no" }),
                    None => detail.unknown(std::slice::from_ref(&input.path), "not recorded"),
                }
            }
            Check::OlderThanDays { input, days } => match (input.read)(p) {
                Some(d) => {
                    let age = (f.as_of - d).num_days();
                    detail
                        .decided(age > *days, why!(detail, "{age} days old on {}", f.as_of))
                        .value(input.path, why!(detail, "{d}"))
                }
                None => detail.unknown(std::slice::from_ref(&input.path), "not recorded"),
            },
            Check::StatedGradeConflicts => stated_grade_conflicts(detail, f, p),
        }
    }
}

/// Extrahepatic disease only in `allowed` sites (or none).
fn extrahepatic_sites_within(detail: Detail, p: &Patient, allowed: &[ExtrahepaticSite]) -> Finding {
    let sites = &p.extent.extrahepatic_sites;
    if sites.is_empty() {
        detail.unknown(&[EXTRAHEPATIC], "extrahepatic disease not recorded")
    } else {
        let outside = |s: &&ExtrahepaticSite| **s != ExtrahepaticSite::None && !allowed.contains(s);
        let within = !sites.iter().any(|s| outside(&s));
        detail
            .decided(
                within,
                if within {
                    Text::Borrowed("extrahepatic disease within the limit")
                } else {
                    why!(
                        detail,
                        "extrahepatic disease in {}",
                        labels(sites.iter().filter(outside), |s| s.label())
                    )
                },
            )
            .value(
                EXTRAHEPATIC,
                why!(detail, "{}", labels(sites, |s| s.label())),
            )
    }
}

/// Extrahepatic disease in any of `sites`.
fn extrahepatic_site_any_of(detail: Detail, p: &Patient, sites: &[ExtrahepaticSite]) -> Finding {
    let recorded = &p.extent.extrahepatic_sites;
    if recorded.is_empty() {
        detail.unknown(&[EXTRAHEPATIC], "extrahepatic disease not recorded")
    } else {
        let found = recorded.iter().any(|s| sites.contains(s));
        let listed = || labels(recorded, |s| s.label());
        detail
            .decided(found, why!(detail, "extrahepatic disease: {}", listed()))
            .value(EXTRAHEPATIC, detail.text(listed))
    }
}

/// A medicine that blocks mIBG uptake is taken.
fn mibg_interfering_drug_taken(detail: Detail, p: &Patient) -> Finding {
    let drugs = &p.medication.mibg_interfering_drugs;
    if drugs.is_empty() {
        detail.unknown(
            &[MIBG_DRUGS],
            "medicines that block mIBG uptake not reviewed",
        )
    } else {
        let taken = |d: &&MibgInterferingDrug| **d != MibgInterferingDrug::None;
        let any_taken = drugs.iter().any(|d| taken(&d));
        detail
            .decided(
                any_taken,
                if any_taken {
                    why!(
                        detail,
                        "takes {}",
                        labels(drugs.iter().filter(taken), |d| d.label())
                    )
                } else {
                    Text::Borrowed("none taken")
                },
            )
            .value(MIBG_DRUGS, why!(detail, "{}", labels(drugs, |d| d.label())))
    }
}

/// Age on the as-of date at least (or, with `at_least` false, under) `years`.
fn age(detail: Detail, f: &Facts, p: &Patient, years: &i32, at_least: &bool) -> Finding {
    match f.age {
        Some(age) => detail
            .decided(
                (age >= *years) == *at_least,
                if *at_least {
                    why!(detail, "age {age} on {}; needs ≥ {years}", f.as_of)
                } else {
                    why!(detail, "age {age} on {}; under {years}?", f.as_of)
                },
            )
            .value(
                if p.demographics.date_of_birth.is_some() {
                    DATE_OF_BIRTH
                } else {
                    AGE
                },
                why!(detail, "{age} years"),
            ),
        None => detail.unknown(&[AGE, DATE_OF_BIRTH], "age not recorded"),
    }
}

/// Progressive disease on imaging.
fn progressive_disease(detail: Detail, p: &Patient) -> Finding {
    match p.progression.progressive {
        Some(true) => {
            let mut f = detail
                .decided(true, "progressive disease on imaging")
                .value(PROGRESSIVE, "yes");
            if let Some(d) = p.progression.progression_scan_date {
                f = f.value(
                    "patient.progression.progression_scan_date",
                    why!(detail, "{d}"),
                );
            }
            f
        }
        Some(false) => detail
            .decided(false, "disease not progressive")
            .value(PROGRESSIVE, "no"),
        None => detail.unknown(&[PROGRESSIVE], "progression not recorded"),
    }
}

/// The differentiation, stated or implied by a stated grade, is one of `accepted`.
fn differentiation_in(
    detail: Detail,
    f: &Facts,
    p: &Patient,
    accepted: &[Differentiation],
) -> Finding {
    match f.grade.differentiation {
        Some(d) => detail
            .decided(
                accepted.contains(&d),
                why!(detail, "{d} ({})", f.grade.differentiation_basis),
            )
            .value(DIFFERENTIATION, d.label()),
        // A stated grade implies the differentiation unless it cannot (MiNEN, or a
        // WHO 2010 G3), and then only the differentiation itself would settle it.
        None => detail.unknown(
            if p.tumour.who_grade.is_some() {
                &[DIFFERENTIATION][..]
            } else {
                &[DIFFERENTIATION, WHO_GRADE][..]
            },
            why!(detail, "differentiation {}", f.grade.differentiation_basis),
        ),
    }
}

/// The WHO grade, stated or derived from Ki-67 and mitoses (`grading`), is one of `grades`.
fn grade_in(detail: Detail, f: &Facts, grades: &[WhoGrade]) -> Finding {
    let mut finding = match f.grade.grade {
        Some(g) => detail
            .decided(
                grades.contains(&g),
                why!(detail, "grade {g}: {}", f.grade.basis),
            )
            .value("derived.who_grade", g.label()),
        None => {
            let mut u = detail.finding(
                Outcome::Unknown,
                "no grade: no stated grade and nothing measured",
            );
            u.missing = f.grade.missing.clone().into();
            u
        }
    };
    if finding.explained {
        finding.values.extend(f.grade.values.iter().cloned());
    }
    finding
}

/// SSTR uptake at least (or, with `at_least` false, below) a Krenning score.
fn krenning(detail: Detail, p: &Patient, score: &i32, at_least: &bool) -> Finding {
    let finding = match (p.imaging.krenning_score, p.imaging.sstr_positive) {
                    (Some(k), _) => {
                        let holds = (k >= *score) == *at_least;
                        detail
                            .decided(
                                holds,
                                why!(
                                    detail,
                                    "Krenning score {k}; {} {score}",
                                    if *at_least { "needs ≥" } else { "below" }
                                ),
                            )
                            .value(
                                KRENNING,
                                Shown::measured(detail, f64::from(k), "", "{score}"),
                            )
                    }
                    // Reference §16.1: "positive" is uptake at least as high as normal liver,
                    // Krenning 2, so a read without a score settles thresholds at 2 only.
                    (None, Some(positive)) if *score == LIVER_LEVEL_KRENNING => {
                        let holds = positive == *at_least;
                        detail
                            .decided(
                                holds,
                                if positive {
                                    "SSTR scan read as positive (uptake at least as high as liver); no Krenning score"
                                } else {
                                    "SSTR scan read as negative; no Krenning score"
                                },
                            )
                            .value(SSTR_POSITIVE, if positive { "positive" } else { "negative" })
                    }
                    (None, Some(_)) => detail.unknown(
                        &[KRENNING],
                        why!(
                            detail,
                            "the SSTR scan was read as positive or negative without a score; Krenning {score} needs the score"
                        ),
                    ),
                    (None, None) => detail.unknown(
                        &[KRENNING, SSTR_POSITIVE],
                        "SSTR uptake (Krenning score or a positive/negative read) not recorded",
                    ),
                };
    match p.imaging.sstr_modality {
        Some(m) if finding.outcome != Outcome::Unknown => {
            finding.value("patient.imaging.sstr_modality", m.label())
        }
        _ => finding,
    }
}

/// A completed course of one of `therapies`: at least `administrations` given.
fn prior_completed_course(
    detail: Detail,
    p: &Patient,
    therapies: &[Therapy],
    administrations: &i32,
) -> Finding {
    let courses = p
        .prior_treatments
        .iter()
        .filter(|t| therapies.contains(&t.therapy));
    let completed = courses
        .clone()
        .find(|t| t.cycles.is_some_and(|c| c >= *administrations));
    let uncounted = courses.clone().any(|t| t.cycles.is_none());
    match completed {
                    Some(t) => detail
                        .decided(
                            true,
                            why!(
                                detail,
                                "a completed course of {}: {} administrations (a course is {administrations})",
                                t.therapy,
                                t.cycles.unwrap_or_default()
                            ),
                        )
                        .value(PRIOR_CYCLES, why!(detail, "{}", t.cycles.unwrap_or_default())),
                    None if uncounted => detail.unknown(
                        &[PRIOR_CYCLES],
                        why!(
                            detail,
                            "a previous course is recorded without its number of administrations: a course is {administrations}, and a further course after a completed one is retreatment"
                        ),
                    ),
                    None if courses.clone().next().is_some() => detail
                        .decided(
                            false,
                            why!(
                                detail,
                                "the recorded course is not complete (fewer than {administrations} administrations): a course in progress is not retreatment"
                            ),
                        )
                        .value(
                            PRIOR_CYCLES,
                            why!(
                                detail,
                                "{}",
                                courses
                                    .map(|t| t.cycles.unwrap_or_default().to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ),
                    None => detail
                        .decided(false, "no previous course in the recorded prior treatments")
                        .value(
                            PRIOR_TREATMENTS,
                            why!(detail, "{} recorded", p.prior_treatments.len()),
                        ),
                }
}

/// Previously treated with any of `therapies`.
fn prior_therapy_any_of(detail: Detail, p: &Patient, therapies: &[Therapy]) -> Finding {
    let treated = |t: &&crate::domain::PriorTreatment| therapies.contains(&t.therapy);
    let found = || {
        labels(p.prior_treatments.iter().filter(treated), |t| {
            t.therapy.label()
        })
    };
    if !p.prior_treatments.iter().any(|t| treated(&t)) {
        detail
            .decided(false, "none of these in the recorded prior treatments")
            .value(
                PRIOR_TREATMENTS,
                why!(detail, "{} recorded", p.prior_treatments.len()),
            )
    } else {
        detail
            .decided(true, why!(detail, "previously treated with {}", found()))
            .value(PRIOR_TREATMENTS, detail.text(found))
    }
}

/// The Welsh region, recorded or implied by the health board, is `region`.
fn welsh_region_is(detail: Detail, p: &Patient, region: &WelshRegion) -> Finding {
    match (p.welsh_region(), p.demographics.welsh_health_board) {
        (Some(r), board) => {
            let f = detail.decided(r == *region, why!(detail, "Welsh region is {r}"));
            match (p.demographics.welsh_region, board) {
                (None, Some(b)) => f.value(WELSH_HEALTH_BOARD, b.label()),
                _ => f.value(WELSH_REGION, r.label()),
            }
        }
        (None, _) => detail.unknown(
            &[WELSH_REGION, WELSH_HEALTH_BOARD],
            "Welsh region (or health board) not recorded",
        ),
    }
}

/// A numeric input below `threshold`, read from `fallback` when `input` is absent.
fn value_below(
    detail: Detail,
    p: &Patient,
    input: &&'static NumericInput,
    fallback: &Option<&'static NumericInput>,
    threshold: &f64,
) -> Finding {
    let chosen = [Some(*input), *fallback]
        .into_iter()
        .flatten()
        .find(|i| (i.read)(p).is_some());
    match chosen.and_then(|i| (i.read)(p).map(|v| (i, v))) {
                    // The threshold is set for `input`'s measure: a value of the fallback measure
                    // says so, so the flag cannot read as if the measures were the same.
                    Some((i, v)) if !std::ptr::eq(i, *input) => detail
                        .decided(
                            v < *threshold,
                            why!(
                                detail,
                                "{v} {} ({}) used in place of {}, which is not recorded; the threshold < {threshold} is for {}",
                                i.unit,
                                i.measure(),
                                input.measure(),
                                input.measure()
                            ),
                        )
                        .value(
                            i.path,
                            Shown {
                                text: why!(
                                    detail,
                                    "{v} {} ({}, not {})",
                                    i.unit,
                                    i.measure(),
                                    input.measure()
                                ),
                                quantity: i.shown(detail, v).quantity,
                            },
                        ),
                    Some((i, v)) => detail
                        .decided(
                            v < *threshold,
                            why!(detail, "{v} {} against < {threshold}", i.unit),
                        )
                        .value(i.path, i.shown(detail, v)),
                    None => {
                        let mut paths = vec![input.path];
                        paths.extend(fallback.map(|i| i.path));
                        detail.unknown(paths, "not recorded")
                    }
                }
}

/// A numeric input above `multiple` times a reference input.
fn value_above_multiple_of(
    detail: Detail,
    p: &Patient,
    input: &&'static NumericInput,
    reference: &&'static NumericInput,
    multiple: &f64,
) -> Finding {
    match ((input.read)(p), (reference.read)(p)) {
        (Some(v), Some(r)) => detail
            .decided(
                v > multiple * r,
                why!(
                    detail,
                    "{v} {} against {multiple} x {r} = {}",
                    input.unit,
                    multiple * r
                ),
            )
            .value(input.path, input.shown(detail, v))
            .value(reference.path, reference.shown(detail, r)),
        (v, r) => {
            let missing: Vec<&str> = [(v.is_none(), input.path), (r.is_none(), reference.path)]
                .into_iter()
                .filter(|(m, _)| *m)
                .map(|(_, p)| p)
                .collect();
            detail.unknown(missing, "not recorded")
        }
    }
}

/// A stated WHO grade disagrees with the measured Ki-67 or mitoses.
fn stated_grade_conflicts(detail: Detail, f: &Facts, p: &Patient) -> Finding {
    match (&f.grade.conflict, p.tumour.who_grade) {
        (Some(conflict), _) => {
            let mut f2 = detail.decided(true, why!(detail, "{conflict}"));
            if f2.explained {
                f2.values = f.grade.values.clone();
            }
            f2
        }
        (None, Some(_)) if f.grade.values.len() > 1 => {
            detail.decided(false, "stated grade agrees with the measured values")
        }
        (None, Some(_)) => detail.unknown(
            &[
                "patient.tumour.ki67_percent",
                "patient.tumour.mitoses_per_2mm2",
            ],
            "nothing measured to check the stated grade against",
        ),
        (None, None) => detail.decided(false, "no stated grade to conflict"),
    }
}

/// Three-valued OR (`any`) or AND over member findings.
/// `members` is walked once per question rather than collected: each member's finding is
/// made once per patient and only looked up again, and a composite allocates nothing at BASIC.
fn combine<'f>(
    detail: Detail,
    members: impl Iterator<Item = &'f Finding> + Clone,
    any: bool,
) -> Finding {
    // A member that does not apply takes no part; a composite none of whose members apply
    // does not apply either.
    let members = members.filter(|f| f.outcome != Outcome::NotApplicable);
    if members.clone().next().is_none() {
        return detail.not_applicable("none of its criteria apply");
    }
    // OR is settled by a MET member, AND by an UNMET one.
    let settles = if any { Outcome::Met } else { Outcome::Unmet };
    let decisive = members.clone().any(|f| f.outcome == settles);
    let unknown = !decisive && members.clone().any(|f| f.outcome == Outcome::Unknown);
    let outcome = if decisive {
        settles
    } else if unknown {
        Outcome::Unknown
    } else if any {
        Outcome::Unmet
    } else {
        Outcome::Met
    };
    // A decisive member explains the outcome; otherwise every member does.
    let explaining = || {
        members
            .clone()
            .filter(move |f| !decisive || f.outcome == settles)
    };
    let mut out = detail.finding(
        outcome,
        why!(
            detail,
            "{}",
            explaining()
                .map(|f| f.explanation.as_ref())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    );
    if out.explained {
        out.values = explaining()
            .flat_map(|f| f.values.iter().cloned())
            .collect();
    }
    if unknown {
        for f in members.clone().filter(|f| f.outcome == Outcome::Unknown) {
            for m in f.missing.iter() {
                if !out.missing.contains(m) {
                    out.missing.to_mut().push(m);
                }
            }
        }
    }
    out
}

fn unresectable_or_metastatic(detail: Detail, p: &Patient) -> Finding {
    match (p.extent.extent, p.extent.resectable_with_curative_intent) {
        (Some(e @ (Extent::Metastatic | Extent::LocallyAdvancedUnresectable)), _) => detail
            .decided(true, why!(detail, "disease is {e}"))
            .value(EXTENT, e.label()),
        (extent, Some(false)) => {
            let f = detail
                .decided(true, "the MDT judges the disease unresectable")
                .value(RESECTABLE, "no");
            match extent {
                Some(e) => f.value(EXTENT, e.label()),
                None => f,
            }
        }
        (Some(e), Some(true)) => detail
            .decided(
                false,
                why!(detail, "{e} disease judged resectable with curative intent"),
            )
            .value(EXTENT, e.label())
            .value(RESECTABLE, "yes"),
        (Some(e), None) => detail
            .unknown(
                &[RESECTABLE],
                why!(detail, "{e} disease: resectability not recorded"),
            )
            .value(EXTENT, e.label()),
        (None, _) => detail.unknown(&[EXTENT, RESECTABLE], "extent of disease not recorded"),
    }
}

fn pregnant_or_breastfeeding(detail: Detail, p: &Patient) -> Finding {
    let d = &p.demographics;
    if d.pregnant == Some(true) {
        return detail.decided(true, "pregnant").value(PREGNANT, "yes");
    }
    if d.breastfeeding == Some(true) {
        return detail
            .decided(true, "breastfeeding")
            .value(BREASTFEEDING, "yes");
    }
    if d.sex == Some(Sex::Male) {
        return detail
            .decided(false, "not applicable (male)")
            .value("patient.demographics.sex", "male");
    }
    match (d.pregnant, d.breastfeeding) {
        (Some(false), Some(false)) => detail
            .decided(false, "neither pregnant nor breastfeeding")
            .value(PREGNANT, "no")
            .value(BREASTFEEDING, "no"),
        (pregnant, breastfeeding) => {
            let missing: Vec<&'static str> = [
                (pregnant.is_none(), PREGNANT),
                (breastfeeding.is_none(), BREASTFEEDING),
            ]
            .into_iter()
            .filter(|(m, _)| *m)
            .map(|(_, p)| p)
            .collect();
            detail.unknown(missing, "pregnancy or breastfeeding not recorded")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// H-41: a value's number is in the unit its words say. Each input's UCUM code is the
    /// translation of its written unit; a unitless score or ratio is a UCUM annotation.
    #[test]
    fn every_numeric_input_has_a_ucum_unit_that_matches_its_words() {
        let ucum_for = |input: &NumericInput| match (input.unit, input.path) {
            ("%", _) => "%",
            ("per 2 mm²", _) => super::super::grading::MITOSES_UCUM,
            ("mm", _) => "mm",
            ("months", _) => "mo",
            ("g/L", _) => "g/L",
            ("x10^9/L", _) => "10*9/L",
            ("µmol/L", _) => "umol/L",
            ("mL/min", _) => "mL/min",
            ("mL/min/1.73 m²", _) => "mL/min/{1.73_m2}",
            // Karnofsky's scale is a percentage of normal activity, written without its sign.
            ("", "patient.fitness.karnofsky_performance_status") => "%",
            ("", "patient.labs.inr") => "{INR}",
            ("", _) => "{score}",
            (unit, path) => panic!("{path}: no UCUM code for '{unit}'"),
        };
        for input in NUMERIC_INPUTS {
            assert_eq!(input.ucum, ucum_for(input), "{}", input.path);
        }
    }
    use crate::engine::Policy;

    /// What `check` finds for `patient` on 1 January 2026, explained.
    fn finding(check: &Check, patient: &Patient) -> Finding {
        let policy = Policy::bundled().expect("bundled policy");
        let date = NaiveDate::from_ymd_opt(2026, 1, 1).expect("date");
        let facts = policy.facts(patient, date, Detail::EXPLAINED);
        check.evaluate(&facts, Detail::EXPLAINED, &|_| Facts::not_in_policy())
    }

    fn uptake(krenning: Option<i32>, sstr_positive: Option<bool>) -> Patient {
        let mut patient = Patient::default();
        patient.imaging.krenning_score = krenning;
        patient.imaging.sstr_positive = sstr_positive;
        patient
    }

    #[test]
    fn a_krenning_score_decides_a_threshold_either_way() {
        for (score, at_least, recorded, outcome) in [
            (3, true, 4, Outcome::Met),
            (3, true, 3, Outcome::Met),
            (3, true, 2, Outcome::Unmet),
            (3, false, 2, Outcome::Met),
            (3, false, 3, Outcome::Unmet),
        ] {
            let check = Check::Krenning { score, at_least };
            let found = finding(&check, &uptake(Some(recorded), Some(true)));
            assert_eq!(
                found.outcome, outcome,
                "Krenning {recorded} against {score} (at least: {at_least})"
            );
            let shown = Shown {
                text: recorded.to_string().into(),
                quantity: Some(Quantity {
                    value: f64::from(recorded),
                    unit: "{score}",
                }),
            };
            assert_eq!(found.values, vec![(KRENNING, shown)]);
        }
    }

    /// Reference §16.1: a scan read only as "positive" shows uptake at least as high as normal
    /// liver, Krenning 2. It settles a threshold at 2 and no other: against a higher threshold
    /// it is UNKNOWN and names the score that would settle it.
    #[test]
    fn a_positive_read_without_a_score_settles_only_the_liver_level() {
        let liver = Check::Krenning {
            score: LIVER_LEVEL_KRENNING,
            at_least: true,
        };
        assert_eq!(
            finding(&liver, &uptake(None, Some(true))).outcome,
            Outcome::Met
        );
        assert_eq!(
            finding(&liver, &uptake(None, Some(false))).outcome,
            Outcome::Unmet
        );
        for score in [3, 4] {
            let above = Check::Krenning {
                score,
                at_least: true,
            };
            let found = finding(&above, &uptake(None, Some(true)));
            assert_eq!(found.outcome, Outcome::Unknown, "Krenning ≥ {score}");
            assert_eq!(found.missing.as_ref(), &[KRENNING][..]);
        }
    }

    #[test]
    fn no_uptake_recorded_is_unknown_and_names_both_inputs() {
        let check = Check::Krenning {
            score: 3,
            at_least: true,
        };
        let found = finding(&check, &uptake(None, None));
        assert_eq!(found.outcome, Outcome::Unknown);
        assert_eq!(found.missing.as_ref(), &[KRENNING, SSTR_POSITIVE][..]);
    }

    fn numeric_input(path: &str) -> &'static NumericInput {
        NUMERIC_INPUTS
            .iter()
            .find(|i| i.path == path)
            .expect("a numeric input")
    }

    fn course(therapy: Therapy, cycles: Option<i32>) -> crate::domain::PriorTreatment {
        crate::domain::PriorTreatment {
            therapy,
            start_date: None,
            end_date: None,
            cycles,
            cumulative_activity_gbq: None,
            best_response: None,
        }
    }

    /// The renal flags' thresholds are set for creatinine clearance, and a measured clearance
    /// and an estimated GFR are not the same measure (reference §14.8): eGFR stands in only when
    /// clearance is absent, and the finding says which measure decided. Clearance, when
    /// recorded, decides even if eGFR disagrees. The threshold here is the test's.
    #[test]
    fn a_fallback_measure_stands_in_only_when_the_first_is_absent_and_says_so() {
        let check = Check::ValueBelow {
            input: numeric_input("patient.labs.creatinine_clearance_ml_per_min"),
            fallback: Some(numeric_input("patient.labs.egfr_ml_per_min_per_1_73m2")),
            threshold: 50.0,
        };
        let mut patient = Patient::default();
        patient.labs.egfr_ml_per_min_per_1_73m2 = Some(40.0);
        let found = finding(&check, &patient);
        assert_eq!(found.outcome, Outcome::Met);
        assert_eq!(found.values[0].0, "patient.labs.egfr_ml_per_min_per_1_73m2");
        assert!(
            found.values[0]
                .1
                .text
                .contains("eGFR, not creatinine clearance"),
            "{found:?}"
        );
        // The number keeps the fallback's own unit: it is an eGFR, not a clearance.
        assert_eq!(
            found.values[0].1.quantity,
            Some(Quantity {
                value: 40.0,
                unit: "mL/min/{1.73_m2}"
            })
        );
        patient.labs.creatinine_clearance_ml_per_min = Some(60.0);
        let found = finding(&check, &patient);
        assert_eq!(found.outcome, Outcome::Unmet, "clearance decides over eGFR");
        let found = finding(&check, &Patient::default());
        assert_eq!(found.outcome, Outcome::Unknown);
        assert_eq!(
            found.missing.as_ref(),
            &[
                "patient.labs.creatinine_clearance_ml_per_min",
                "patient.labs.egfr_ml_per_min_per_1_73m2"
            ][..]
        );
    }

    /// Retreatment is a further course after a completed one (reference §16.1): a course
    /// counted short of it is not one, and a course recorded without its count is UNKNOWN,
    /// never a no.
    #[test]
    fn a_completed_course_needs_its_administrations_counted() {
        let check = Check::PriorCompletedCourse {
            therapies: vec![Therapy::PrrtLu177Dotatate],
            administrations: 4,
        };
        let with = |courses: Vec<crate::domain::PriorTreatment>| {
            let patient = Patient {
                prior_treatments: courses,
                ..Patient::default()
            };
            finding(&check, &patient).outcome
        };
        assert_eq!(
            with(vec![course(Therapy::PrrtLu177Dotatate, Some(4))]),
            Outcome::Met
        );
        assert_eq!(
            with(vec![course(Therapy::PrrtLu177Dotatate, Some(2))]),
            Outcome::Unmet
        );
        assert_eq!(
            with(vec![course(Therapy::PrrtLu177Dotatate, None)]),
            Outcome::Unknown
        );
        assert_eq!(
            with(vec![course(Therapy::Everolimus, Some(6))]),
            Outcome::Unmet
        );
        assert_eq!(with(vec![]), Outcome::Unmet);
        assert_eq!(
            with(vec![
                course(Therapy::PrrtLu177Dotatate, None),
                course(Therapy::PrrtLu177Dotatate, Some(4))
            ]),
            Outcome::Met,
            "one counted, completed course settles it"
        );
    }

    /// A patient whose Welsh region is not recorded is placed by their health board: Betsi
    /// Cadwaladr serves North Wales; the finding names the board it used.
    #[test]
    fn the_health_board_places_a_patient_in_a_welsh_region() {
        let north = Check::WelshRegionIs {
            region: WelshRegion::North,
        };
        let mut patient = Patient::default();
        assert_eq!(finding(&north, &patient).outcome, Outcome::Unknown);
        patient.demographics.welsh_health_board =
            Some(crate::domain::WelshHealthBoard::BetsiCadwaladr);
        let found = finding(&north, &patient);
        assert_eq!(found.outcome, Outcome::Met);
        assert_eq!(found.values[0].0, WELSH_HEALTH_BOARD);
        patient.demographics.welsh_health_board =
            Some(crate::domain::WelshHealthBoard::CardiffAndVale);
        assert_eq!(finding(&north, &patient).outcome, Outcome::Unmet);
    }

    /// "None" recorded among extrahepatic sites is no disease outside the liver, not a site
    /// outside the limit; nothing recorded is UNKNOWN.
    #[test]
    fn extrahepatic_disease_within_a_limit_reads_none_as_no_disease() {
        let check = Check::ExtrahepaticSitesWithin {
            allowed: vec![ExtrahepaticSite::Bone],
        };
        let with = |sites: Vec<ExtrahepaticSite>| {
            let mut patient = Patient::default();
            patient.extent.extrahepatic_sites = sites;
            finding(&check, &patient).outcome
        };
        assert_eq!(with(vec![]), Outcome::Unknown);
        assert_eq!(with(vec![ExtrahepaticSite::None]), Outcome::Met);
        assert_eq!(with(vec![ExtrahepaticSite::Bone]), Outcome::Met);
        assert_eq!(
            with(vec![ExtrahepaticSite::Bone, ExtrahepaticSite::Lung]),
            Outcome::Unmet
        );
    }

    /// Age on the as-of date decides both ways, from the date of birth when it is given.
    #[test]
    fn age_is_taken_on_the_as_of_date() {
        let adult = Check::Age {
            years: 18,
            at_least: true,
        };
        let child = Check::Age {
            years: 18,
            at_least: false,
        };
        let mut patient = Patient::default();
        assert_eq!(finding(&adult, &patient).outcome, Outcome::Unknown);
        // 18 on 1 January 2026, the date `finding` evaluates on.
        patient.demographics.date_of_birth = NaiveDate::from_ymd_opt(2008, 1, 1);
        assert_eq!(finding(&adult, &patient).outcome, Outcome::Met);
        assert_eq!(finding(&child, &patient).outcome, Outcome::Unmet);
        patient.demographics.date_of_birth = NaiveDate::from_ymd_opt(2008, 1, 2);
        assert_eq!(finding(&adult, &patient).outcome, Outcome::Unmet);
        assert_eq!(finding(&child, &patient).outcome, Outcome::Met);
    }
}
