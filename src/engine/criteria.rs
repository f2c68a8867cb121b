//! The criteria catalogue: small named checks over a [`Patient`], each answering MET, UNMET or
//! UNKNOWN with the values it used and the inputs it missed. The policy file composes them and
//! supplies their parameters; this file is the only place that reads patient facts for a rule.

use chrono::NaiveDate;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::grading::GradeAssessment;
use crate::domain::{
    ChildPugh, Differentiation, Extent, ExtrahepaticSite, FunctionalSyndrome, MibgInterferingDrug,
    Nation, Patient, PrimarySite, Sex, Therapy, WelshRegion, WhoGrade,
};

/// Three-valued outcome (clinical README, position 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Met,
    Unmet,
    Unknown,
}

/// What one check found.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub outcome: Outcome,
    /// (field path, value with unit)
    pub values: Vec<(String, String)>,
    /// Field paths that would settle an UNKNOWN.
    pub missing: Vec<String>,
    pub explanation: String,
}

impl Finding {
    fn new(outcome: Outcome, explanation: impl Into<String>) -> Self {
        Finding {
            outcome,
            values: Vec::new(),
            missing: Vec::new(),
            explanation: explanation.into(),
        }
    }

    fn decided(met: bool, explanation: impl Into<String>) -> Self {
        Finding::new(if met { Outcome::Met } else { Outcome::Unmet }, explanation)
    }

    fn unknown(missing: &[&str], explanation: impl Into<String>) -> Self {
        let mut f = Finding::new(Outcome::Unknown, explanation);
        f.missing = missing.iter().map(|m| m.to_string()).collect();
        f
    }

    fn value(mut self, field: &str, value: impl Into<String>) -> Self {
        self.values.push((field.to_string(), value.into()));
        self
    }
}

/// Everything a check may read: the patient, the as-of date and what was derived once per request.
pub struct Facts<'a> {
    pub patient: &'a Patient,
    pub as_of: NaiveDate,
    pub age: Option<i32>,
    pub grade: GradeAssessment,
    /// Registries (policy ids) in which the patient is actively enrolled, as the store says.
    /// Set before any criterion is evaluated: findings are remembered once made.
    pub registry_enrolments: Vec<String>,
    /// Each criterion's finding, made at most once per patient and date: eligibility, funding,
    /// MDT selection and delivery sites share most criteria.
    pub findings: Vec<std::sync::OnceLock<std::sync::Arc<Finding>>>,
}

/// A numeric patient input a threshold check may name in the policy file.
pub struct NumericInput {
    pub path: &'static str,
    pub unit: &'static str,
    read: fn(&Patient) -> Option<f64>,
}

/// A yes/no patient input a check may name in the policy file.
pub struct BooleanInput {
    pub path: &'static str,
    read: fn(&Patient) -> Option<bool>,
}

/// A dated patient input a check may name in the policy file.
pub struct DateInput {
    pub path: &'static str,
    read: fn(&Patient) -> Option<NaiveDate>,
}

macro_rules! numeric {
    ($path:literal, $unit:literal, |$p:ident| $e:expr) => {
        NumericInput {
            path: concat!("patient.", $path),
            unit: $unit,
            read: |$p| $e,
        }
    };
}

/// Every numeric input a policy may threshold.
pub static NUMERIC_INPUTS: &[NumericInput] = &[
    numeric!("tumour.ki67_percent", "%", |p| p.tumour.ki67_percent),
    numeric!("tumour.mitoses_per_2mm2", "per 2 mm²", |p| p
        .tumour
        .mitoses_per_2mm2),
    numeric!("extent.liver_burden_percent", "%", |p| p
        .extent
        .liver_burden_percent),
    numeric!("extent.estimated_debulkable_percent", "%", |p| p
        .extent
        .estimated_debulkable_percent),
    numeric!("imaging.krenning_score", "", |p| p
        .imaging
        .krenning_score
        .map(f64::from)),
    numeric!("imaging.mibg_uptake_score", "", |p| p
        .imaging
        .mibg_uptake_score
        .map(f64::from)),
    numeric!("fitness.ecog_performance_status", "", |p| p
        .fitness
        .ecog_performance_status
        .map(f64::from)),
    numeric!("fitness.karnofsky_performance_status", "", |p| p
        .fitness
        .karnofsky_performance_status
        .map(f64::from)),
    numeric!("fitness.life_expectancy_months", "months", |p| p
        .fitness
        .life_expectancy_months
        .map(f64::from)),
    numeric!("fitness.prior_marrow_radiotherapy_percent", "%", |p| p
        .fitness
        .prior_marrow_radiotherapy_percent),
    numeric!("fitness.lvef_percent", "%", |p| p.fitness.lvef_percent),
    numeric!("labs.haemoglobin_g_per_l", "g/L", |p| p
        .labs
        .haemoglobin_g_per_l),
    numeric!("labs.platelets_10e9_per_l", "x10^9/L", |p| p
        .labs
        .platelets_10e9_per_l),
    numeric!("labs.white_cell_count_10e9_per_l", "x10^9/L", |p| p
        .labs
        .white_cell_count_10e9_per_l),
    numeric!("labs.neutrophils_10e9_per_l", "x10^9/L", |p| p
        .labs
        .neutrophils_10e9_per_l),
    numeric!("labs.creatinine_umol_per_l", "µmol/L", |p| p
        .labs
        .creatinine_umol_per_l),
    numeric!("labs.creatinine_clearance_ml_per_min", "mL/min", |p| p
        .labs
        .creatinine_clearance_ml_per_min),
    numeric!("labs.egfr_ml_per_min_per_1_73m2", "mL/min/1.73 m²", |p| p
        .labs
        .egfr_ml_per_min_per_1_73m2),
    numeric!("labs.bilirubin_umol_per_l", "µmol/L", |p| p
        .labs
        .bilirubin_umol_per_l),
    numeric!("labs.bilirubin_upper_limit_umol_per_l", "µmol/L", |p| p
        .labs
        .bilirubin_upper_limit_umol_per_l),
    numeric!("labs.albumin_g_per_l", "g/L", |p| p.labs.albumin_g_per_l),
    numeric!("labs.inr", "", |p| p.labs.inr),
];

macro_rules! boolean {
    ($path:literal, |$p:ident| $e:expr) => {
        BooleanInput {
            path: concat!("patient.", $path),
            read: |$p| $e,
        }
    };
}

/// Every yes/no input a policy may test.
pub static BOOLEAN_INPUTS: &[BooleanInput] = &[
    boolean!("imaging.fdg_positive_sstr_negative_lesion", |p| p
        .imaging
        .fdg_positive_sstr_negative_lesion),
    boolean!("imaging.mibg_positive", |p| p.imaging.mibg_positive),
    boolean!("extent.liver_metastases", |p| p.extent.liver_metastases),
    boolean!("extent.liver_dominant", |p| p.extent.liver_dominant),
    boolean!("extent.bilobar_liver_disease", |p| p
        .extent
        .bilobar_liver_disease),
    boolean!("tumour.symptoms_controlled_on_ssa", |p| p
        .tumour
        .symptoms_controlled_on_ssa),
    boolean!("extent.bilobar_liver_disease", |p| p
        .extent
        .bilobar_liver_disease),
    boolean!("tumour.symptoms_controlled_on_ssa", |p| p
        .tumour
        .symptoms_controlled_on_ssa),
    boolean!("extent.resectable_with_curative_intent", |p| p
        .extent
        .resectable_with_curative_intent),
    boolean!("medication.on_long_acting_ssa", |p| p
        .medication
        .on_long_acting_ssa),
    boolean!("fitness.can_follow_radiation_precautions", |p| p
        .fitness
        .can_follow_radiation_precautions),
    boolean!("fitness.carcinoid_heart_disease", |p| p
        .fitness
        .carcinoid_heart_disease),
    boolean!("fitness.uncontrolled_hypertension", |p| p
        .fitness
        .uncontrolled_hypertension),
    boolean!("fitness.qt_prolongation_risk", |p| p
        .fitness
        .qt_prolongation_risk),
    boolean!("fitness.portal_vein_thrombosis", |p| p
        .fitness
        .portal_vein_thrombosis),
    boolean!("fitness.ascites", |p| p.fitness.ascites),
    boolean!("fitness.biliary_enteric_anastomosis", |p| p
        .fitness
        .biliary_enteric_anastomosis),
    boolean!("labs.on_dialysis", |p| p.labs.on_dialysis),
    boolean!("mdt.trial_or_registry_candidate", |p| p
        .mdt
        .trial_or_registry_candidate),
];

/// Every dated input a policy may age-check.
pub static DATE_INPUTS: &[DateInput] = &[
    DateInput {
        path: "patient.imaging.sstr_scan_date",
        read: |p| p.imaging.sstr_scan_date,
    },
    DateInput {
        path: "patient.imaging.mibg_scan_date",
        read: |p| p.imaging.mibg_scan_date,
    },
    DateInput {
        path: "patient.labs.collected_date",
        read: |p| p.labs.collected_date,
    },
    DateInput {
        path: "patient.progression.progression_scan_date",
        read: |p| p.progression.progression_scan_date,
    },
];

const AGE: &str = "patient.demographics.age_years";
const DATE_OF_BIRTH: &str = "patient.demographics.date_of_birth";
const NATION: &str = "patient.demographics.nation";
const WELSH_REGION: &str = "patient.demographics.welsh_region";
const PRIMARY_SITE: &str = "patient.tumour.primary_site";
const EXTENT: &str = "patient.extent.extent";
const RESECTABLE: &str = "patient.extent.resectable_with_curative_intent";
const PROGRESSIVE: &str = "patient.progression.progressive";
const DIFFERENTIATION: &str = "patient.tumour.differentiation";
const KRENNING: &str = "patient.imaging.krenning_score";
const PREGNANT: &str = "patient.demographics.pregnant";
const BREASTFEEDING: &str = "patient.demographics.breastfeeding";
const PRIOR_TREATMENTS: &str = "patient.prior_treatments";
const SYNDROME: &str = "patient.tumour.functional_syndrome";
const EXTRAHEPATIC: &str = "patient.extent.extrahepatic_sites";
const MIBG_DRUGS: &str = "patient.medication.mibg_interfering_drugs";
const CHILD_PUGH: &str = "patient.fitness.child_pugh";

/// A compiled check with its parameters.
pub enum Check {
    AgeAtLeast {
        years: i32,
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
    KrenningAtLeast {
        score: i32,
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

/// The catalogue as the policy file names it: check name and its parameters.
pub const CATALOGUE: &[(&str, &str)] = &[
    ("age_at_least", "years: integer"),
    ("primary_site_in", "sites: list of primary sites"),
    ("unresectable_or_metastatic", "(none)"),
    ("progressive_disease", "(none)"),
    ("differentiation_in", "accepted: list of differentiations"),
    (
        "grade_in",
        "grades: list of WHO grades (g1, g2, g3, nec, minen)",
    ),
    ("krenning_at_least", "score: integer 0-4"),
    ("pregnant_or_breastfeeding", "(none)"),
    ("prior_therapy_any_of", "therapies: list of therapies"),
    ("nation_is", "nation: england | wales"),
    ("welsh_region_is", "region: north | south_mid"),
    (
        "value_below",
        "input: numeric input, threshold: number, fallback_input: numeric input (optional)",
    ),
    ("value_above", "input: numeric input, threshold: number"),
    (
        "value_above_multiple_of",
        "input: numeric input, reference: numeric input, multiple: number",
    ),
    ("is_true", "input: yes/no input"),
    ("is_false", "input: yes/no input"),
    ("older_than_days", "input: date input, days: integer"),
    ("stated_grade_conflicts", "(none)"),
    (
        "value_at_most",
        "input: numeric input, limit: number (MET when value ≤ limit)",
    ),
    (
        "value_at_least",
        "input: numeric input, limit: number (MET when value ≥ limit)",
    ),
    ("extent_in", "extents: list of extents"),
    (
        "functional_syndrome_in",
        "syndromes: list of functional syndromes (none = non-functional)",
    ),
    (
        "extrahepatic_sites_within",
        "allowed: list of extrahepatic sites",
    ),
    (
        "extrahepatic_site_any_of",
        "sites: list of extrahepatic sites",
    ),
    ("mibg_interfering_drug_taken", "(none)"),
    ("child_pugh_in", "classes: list of Child-Pugh classes"),
    ("any_of", "criteria: list of criterion ids defined above"),
    ("all_of", "criteria: list of criterion ids defined above"),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

fn params<T: DeserializeOwned>(table: &toml::Table) -> Result<T, String> {
    T::deserialize(toml::Value::Table(table.clone()))
        .map_err(|e| format!("invalid parameters: {}", e.message().trim()))
}

/// A patient input a policy may name, found by its path without the `patient.` prefix.
trait NamedInput: 'static {
    fn path(&self) -> &'static str;
}

impl NamedInput for NumericInput {
    fn path(&self) -> &'static str {
        self.path
    }
}

impl NamedInput for BooleanInput {
    fn path(&self) -> &'static str {
        self.path
    }
}

impl NamedInput for DateInput {
    fn path(&self) -> &'static str {
        self.path
    }
}

fn input<T: NamedInput>(table: &'static [T], name: &str, kind: &str) -> Result<&'static T, String> {
    let short = |i: &T| i.path().strip_prefix("patient.").unwrap_or(i.path());
    table.iter().find(|i| short(i) == name).ok_or_else(|| {
        let known: Vec<&str> = table.iter().map(short).collect();
        format!(
            "unknown {kind} input '{name}'; known inputs: {}",
            known.join(", ")
        )
    })
}

fn numeric(name: &str) -> Result<&'static NumericInput, String> {
    input(NUMERIC_INPUTS, name, "numeric")
}

fn boolean(name: &str) -> Result<&'static BooleanInput, String> {
    input(BOOLEAN_INPUTS, name, "yes/no")
}

fn date_input(name: &str) -> Result<&'static DateInput, String> {
    input(DATE_INPUTS, name, "date")
}

fn non_empty<T>(list: Vec<T>, what: &str) -> Result<Vec<T>, String> {
    if list.is_empty() {
        Err(format!("{what} must not be empty"))
    } else {
        Ok(list)
    }
}

impl Check {
    /// Looks `name` up in the catalogue and reads its parameters.
    pub fn compile(name: &str, table: &toml::Table) -> Result<Check, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Years {
            years: i32,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Sites {
            sites: Vec<PrimarySite>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Accepted {
            accepted: Vec<Differentiation>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Grades {
            grades: Vec<WhoGrade>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Score {
            score: i32,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Therapies {
            therapies: Vec<Therapy>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct NationParam {
            nation: Nation,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Region {
            region: WelshRegion,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Below {
            input: String,
            threshold: f64,
            fallback_input: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Above {
            input: String,
            threshold: f64,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Multiple {
            input: String,
            reference: String,
            multiple: f64,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Input {
            input: String,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Aged {
            input: String,
            days: i64,
        }

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Limit {
            input: String,
            limit: f64,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Extents {
            extents: Vec<Extent>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Syndromes {
            syndromes: Vec<FunctionalSyndrome>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Allowed {
            allowed: Vec<ExtrahepaticSite>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SiteList {
            sites: Vec<ExtrahepaticSite>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Classes {
            classes: Vec<ChildPugh>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Members {
            criteria: Vec<String>,
        }

        let none = |check: Check| params::<NoParams>(table).map(|_| check);
        Ok(match name {
            "age_at_least" => Check::AgeAtLeast {
                years: params::<Years>(table)?.years,
            },
            "primary_site_in" => Check::PrimarySiteIn {
                sites: non_empty(params::<Sites>(table)?.sites, "sites")?,
            },
            "unresectable_or_metastatic" => none(Check::UnresectableOrMetastatic)?,
            "progressive_disease" => none(Check::ProgressiveDisease)?,
            "differentiation_in" => Check::DifferentiationIn {
                accepted: non_empty(params::<Accepted>(table)?.accepted, "accepted")?,
            },
            "grade_in" => Check::GradeIn {
                grades: non_empty(params::<Grades>(table)?.grades, "grades")?,
            },
            "krenning_at_least" => {
                let score = params::<Score>(table)?.score;
                if !(0..=4).contains(&score) {
                    return Err(format!("score must be a Krenning score 0-4, got {score}"));
                }
                Check::KrenningAtLeast { score }
            }
            "pregnant_or_breastfeeding" => none(Check::PregnantOrBreastfeeding)?,
            "prior_therapy_any_of" => Check::PriorTherapyAnyOf {
                therapies: non_empty(params::<Therapies>(table)?.therapies, "therapies")?,
            },
            "nation_is" => Check::NationIs {
                nation: params::<NationParam>(table)?.nation,
            },
            "welsh_region_is" => Check::WelshRegionIs {
                region: params::<Region>(table)?.region,
            },
            "value_below" => {
                let p = params::<Below>(table)?;
                Check::ValueBelow {
                    input: numeric(&p.input)?,
                    fallback: p.fallback_input.as_deref().map(numeric).transpose()?,
                    threshold: p.threshold,
                }
            }
            "value_above" => {
                let p = params::<Above>(table)?;
                Check::ValueAbove {
                    input: numeric(&p.input)?,
                    threshold: p.threshold,
                }
            }
            "value_above_multiple_of" => {
                let p = params::<Multiple>(table)?;
                Check::ValueAboveMultipleOf {
                    input: numeric(&p.input)?,
                    reference: numeric(&p.reference)?,
                    multiple: p.multiple,
                }
            }
            "is_true" => Check::IsTrue {
                input: boolean(&params::<Input>(table)?.input)?,
            },
            "is_false" => Check::IsFalse {
                input: boolean(&params::<Input>(table)?.input)?,
            },
            "older_than_days" => {
                let p = params::<Aged>(table)?;
                Check::OlderThanDays {
                    input: date_input(&p.input)?,
                    days: p.days,
                }
            }
            "stated_grade_conflicts" => none(Check::StatedGradeConflicts)?,
            "value_at_most" => {
                let p = params::<Limit>(table)?;
                Check::ValueAtMost {
                    input: numeric(&p.input)?,
                    limit: p.limit,
                }
            }
            "value_at_least" => {
                let p = params::<Limit>(table)?;
                Check::ValueAtLeast {
                    input: numeric(&p.input)?,
                    limit: p.limit,
                }
            }
            "extent_in" => Check::ExtentIn {
                extents: non_empty(params::<Extents>(table)?.extents, "extents")?,
            },
            "functional_syndrome_in" => Check::FunctionalSyndromeIn {
                syndromes: non_empty(params::<Syndromes>(table)?.syndromes, "syndromes")?,
            },
            "extrahepatic_sites_within" => Check::ExtrahepaticSitesWithin {
                allowed: params::<Allowed>(table)?.allowed,
            },
            "extrahepatic_site_any_of" => Check::ExtrahepaticSiteAnyOf {
                sites: non_empty(params::<SiteList>(table)?.sites, "sites")?,
            },
            "mibg_interfering_drug_taken" => none(Check::MibgInterferingDrugTaken)?,
            "child_pugh_in" => Check::ChildPughIn {
                classes: non_empty(params::<Classes>(table)?.classes, "classes")?,
            },
            "any_of" | "all_of" => {
                let names = params::<Members>(table)?.criteria;
                if names.len() < 2 {
                    return Err("criteria must name at least two criteria".into());
                }
                Check::Composite {
                    any: name == "any_of",
                    names,
                }
            }
            other => {
                let names: Vec<&str> = CATALOGUE.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "unknown check '{other}'; the catalogue has: {}",
                    names.join(", ")
                ));
            }
        })
    }

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
            Check::KrenningAtLeast { score } => format!("Krenning ≥ {score}"),
            Check::AgeAtLeast { years } => format!("age ≥ {years}"),
            Check::ValueAtMost { input, limit } => {
                format!("≤ {limit} {}", input.unit).trim_end().to_string()
            }
            Check::ValueAtLeast { input, limit } => {
                format!("≥ {limit} {}", input.unit).trim_end().to_string()
            }
            _ => String::new(),
        }
    }

    /// Evaluates the check on the facts; `member` evaluates another criterion of the policy
    /// (for composites).
    pub fn evaluate(&self, f: &Facts, member: &dyn Fn(usize) -> Finding) -> Finding {
        let p = f.patient;
        match self {
            Check::AnyOf { members } => combine(members.iter().map(|m| member(*m)), true),
            Check::AllOf { members } => combine(members.iter().map(|m| member(*m)), false),
            Check::Composite { .. } => {
                Finding::unknown(&[], "composite not resolved by the policy loader")
            }
            Check::ValueAtMost { input, limit } => match (input.read)(p) {
                Some(v) => {
                    Finding::decided(v <= *limit, format!("{v} {} against ≤ {limit}", input.unit))
                        .value(input.path, format!("{v} {}", input.unit).trim_end())
                }
                None => Finding::unknown(&[input.path], "not recorded"),
            },
            Check::ValueAtLeast { input, limit } => match (input.read)(p) {
                Some(v) => {
                    Finding::decided(v >= *limit, format!("{v} {} against ≥ {limit}", input.unit))
                        .value(input.path, format!("{v} {}", input.unit).trim_end())
                }
                None => Finding::unknown(&[input.path], "not recorded"),
            },
            Check::ExtentIn { extents } => match p.extent.extent {
                Some(e) => Finding::decided(extents.contains(&e), format!("disease is {e}"))
                    .value(EXTENT, e.label()),
                None => Finding::unknown(&[EXTENT], "extent of disease not recorded"),
            },
            Check::FunctionalSyndromeIn { syndromes } => match p.tumour.functional_syndrome {
                Some(s) => {
                    Finding::decided(syndromes.contains(&s), format!("hormonal status: {s}"))
                        .value(SYNDROME, s.label())
                }
                None => Finding::unknown(&[SYNDROME], "hormonal (functional) status not recorded"),
            },
            Check::ExtrahepaticSitesWithin { allowed } => {
                let sites = &p.extent.extrahepatic_sites;
                if sites.is_empty() {
                    Finding::unknown(&[EXTRAHEPATIC], "extrahepatic disease not recorded")
                } else {
                    let outside: Vec<&str> = sites
                        .iter()
                        .filter(|s| **s != ExtrahepaticSite::None && !allowed.contains(s))
                        .map(|s| s.label())
                        .collect();
                    let listed: Vec<&str> = sites.iter().map(|s| s.label()).collect();
                    Finding::decided(
                        outside.is_empty(),
                        if outside.is_empty() {
                            "extrahepatic disease within the limit".to_string()
                        } else {
                            format!("extrahepatic disease in {}", outside.join(", "))
                        },
                    )
                    .value(EXTRAHEPATIC, listed.join(", "))
                }
            }
            Check::ExtrahepaticSiteAnyOf { sites } => {
                let recorded = &p.extent.extrahepatic_sites;
                if recorded.is_empty() {
                    Finding::unknown(&[EXTRAHEPATIC], "extrahepatic disease not recorded")
                } else {
                    let listed: Vec<&str> = recorded.iter().map(|s| s.label()).collect();
                    let found = recorded.iter().any(|s| sites.contains(s));
                    Finding::decided(
                        found,
                        format!("extrahepatic disease: {}", listed.join(", ")),
                    )
                    .value(EXTRAHEPATIC, listed.join(", "))
                }
            }
            Check::MibgInterferingDrugTaken => {
                let drugs = &p.medication.mibg_interfering_drugs;
                if drugs.is_empty() {
                    Finding::unknown(
                        &[MIBG_DRUGS],
                        "medicines that block mIBG uptake not reviewed",
                    )
                } else {
                    let taken: Vec<&str> = drugs
                        .iter()
                        .filter(|d| **d != MibgInterferingDrug::None)
                        .map(|d| d.label())
                        .collect();
                    let listed: Vec<&str> = drugs.iter().map(|d| d.label()).collect();
                    Finding::decided(
                        !taken.is_empty(),
                        if taken.is_empty() {
                            "none taken".to_string()
                        } else {
                            format!("takes {}", taken.join(", "))
                        },
                    )
                    .value(MIBG_DRUGS, listed.join(", "))
                }
            }
            Check::ChildPughIn { classes } => match p.fitness.child_pugh {
                Some(c) => {
                    Finding::decided(classes.contains(&c), c.label()).value(CHILD_PUGH, c.label())
                }
                None => Finding::unknown(&[CHILD_PUGH], "Child-Pugh class not recorded"),
            },
            Check::AgeAtLeast { years } => match f.age {
                Some(age) => Finding::decided(
                    age >= *years,
                    format!("age {age} on {}; needs ≥ {years}", f.as_of),
                )
                .value(
                    if p.demographics.date_of_birth.is_some() {
                        DATE_OF_BIRTH
                    } else {
                        AGE
                    },
                    format!("{age} years"),
                ),
                None => Finding::unknown(&[AGE, DATE_OF_BIRTH], "age not recorded"),
            },
            Check::PrimarySiteIn { sites } => match p.tumour.primary_site {
                Some(site) => {
                    Finding::decided(sites.contains(&site), format!("primary site is {site}"))
                        .value(PRIMARY_SITE, site.label())
                }
                None => Finding::unknown(&[PRIMARY_SITE], "primary site not recorded"),
            },
            Check::UnresectableOrMetastatic => unresectable_or_metastatic(p),
            Check::ProgressiveDisease => match p.progression.progressive {
                Some(true) => {
                    let mut f = Finding::decided(true, "progressive disease on imaging")
                        .value(PROGRESSIVE, "yes");
                    if let Some(d) = p.progression.progression_scan_date {
                        f = f.value("patient.progression.progression_scan_date", d.to_string());
                    }
                    f
                }
                Some(false) => {
                    Finding::decided(false, "disease not progressive").value(PROGRESSIVE, "no")
                }
                None => Finding::unknown(&[PROGRESSIVE], "progression not recorded"),
            },
            Check::DifferentiationIn { accepted } => match f.grade.differentiation {
                Some(d) => Finding::decided(
                    accepted.contains(&d),
                    format!("{d} ({})", f.grade.differentiation_basis),
                )
                .value(DIFFERENTIATION, d.label()),
                None => Finding::unknown(
                    &[DIFFERENTIATION, "patient.tumour.who_grade"],
                    "differentiation not recorded",
                ),
            },
            Check::GradeIn { grades } => {
                let mut finding = match f.grade.grade {
                    Some(g) => Finding::decided(
                        grades.contains(&g),
                        format!("grade {g}: {}", f.grade.basis),
                    )
                    .value("derived.who_grade", g.label()),
                    None => {
                        let mut u = Finding::new(
                            Outcome::Unknown,
                            "no grade: no stated grade and nothing measured",
                        );
                        u.missing = f.grade.missing.clone();
                        u
                    }
                };
                finding.values.extend(f.grade.values.iter().cloned());
                finding
            }
            Check::KrenningAtLeast { score } => match p.imaging.krenning_score {
                Some(k) => {
                    let mut f = Finding::decided(
                        k >= *score,
                        format!("Krenning score {k}; needs ≥ {score}"),
                    )
                    .value(KRENNING, k.to_string());
                    if let Some(m) = p.imaging.sstr_modality {
                        f = f.value("patient.imaging.sstr_modality", m.label());
                    }
                    f
                }
                None => Finding::unknown(&[KRENNING], "SSTR uptake (Krenning score) not recorded"),
            },
            Check::PregnantOrBreastfeeding => pregnant_or_breastfeeding(p),
            Check::PriorTherapyAnyOf { therapies } => {
                let found: Vec<&str> = p
                    .prior_treatments
                    .iter()
                    .filter(|t| therapies.contains(&t.therapy))
                    .map(|t| t.therapy.label())
                    .collect();
                if found.is_empty() {
                    Finding::decided(false, "none of these in the recorded prior treatments").value(
                        PRIOR_TREATMENTS,
                        format!("{} recorded", p.prior_treatments.len()),
                    )
                } else {
                    Finding::decided(
                        true,
                        format!("previously treated with {}", found.join(", ")),
                    )
                    .value(PRIOR_TREATMENTS, found.join(", "))
                }
            }
            Check::NationIs { nation } => match p.demographics.nation {
                Some(n) => Finding::decided(n == *nation, format!("nation is {n}"))
                    .value(NATION, n.label()),
                None => Finding::unknown(&[NATION], "nation not recorded"),
            },
            Check::WelshRegionIs { region } => match p.demographics.welsh_region {
                Some(r) => Finding::decided(r == *region, format!("Welsh region is {r}"))
                    .value(WELSH_REGION, r.label()),
                None => Finding::unknown(&[WELSH_REGION], "Welsh region not recorded"),
            },
            Check::ValueBelow {
                input,
                fallback,
                threshold,
            } => {
                let chosen = [Some(*input), *fallback]
                    .into_iter()
                    .flatten()
                    .find(|i| (i.read)(p).is_some());
                match chosen.and_then(|i| (i.read)(p).map(|v| (i, v))) {
                    Some((i, v)) => Finding::decided(
                        v < *threshold,
                        format!("{v} {} against < {threshold}", i.unit),
                    )
                    .value(i.path, format!("{v} {}", i.unit).trim_end()),
                    None => {
                        let mut paths = vec![input.path];
                        paths.extend(fallback.map(|i| i.path));
                        Finding::unknown(&paths, "not recorded")
                    }
                }
            }
            Check::ValueAbove { input, threshold } => match (input.read)(p) {
                Some(v) => Finding::decided(
                    v > *threshold,
                    format!("{v} {} against > {threshold}", input.unit),
                )
                .value(input.path, format!("{v} {}", input.unit).trim_end()),
                None => Finding::unknown(&[input.path], "not recorded"),
            },
            Check::ValueAboveMultipleOf {
                input,
                reference,
                multiple,
            } => match ((input.read)(p), (reference.read)(p)) {
                (Some(v), Some(r)) => Finding::decided(
                    v > multiple * r,
                    format!(
                        "{v} {} against {multiple} x {r} = {}",
                        input.unit,
                        multiple * r
                    ),
                )
                .value(input.path, format!("{v} {}", input.unit))
                .value(reference.path, format!("{r} {}", reference.unit)),
                (v, r) => {
                    let missing: Vec<&str> =
                        [(v.is_none(), input.path), (r.is_none(), reference.path)]
                            .into_iter()
                            .filter(|(m, _)| *m)
                            .map(|(_, p)| p)
                            .collect();
                    Finding::unknown(&missing, "not recorded")
                }
            },
            Check::IsTrue { input } | Check::IsFalse { input } => {
                let wanted = matches!(self, Check::IsTrue { .. });
                match (input.read)(p) {
                    Some(v) => Finding::decided(v == wanted, if v { "yes" } else { "no" })
                        .value(input.path, if v { "yes" } else { "no" }),
                    None => Finding::unknown(&[input.path], "not recorded"),
                }
            }
            Check::OlderThanDays { input, days } => match (input.read)(p) {
                Some(d) => {
                    let age = (f.as_of - d).num_days();
                    Finding::decided(age > *days, format!("{age} days old on {}", f.as_of))
                        .value(input.path, d.to_string())
                }
                None => Finding::unknown(&[input.path], "not recorded"),
            },
            Check::StatedGradeConflicts => match (&f.grade.conflict, p.tumour.who_grade) {
                (Some(conflict), _) => {
                    let mut f2 = Finding::decided(true, conflict.clone());
                    f2.values = f.grade.values.clone();
                    f2
                }
                (None, Some(_)) if f.grade.values.len() > 1 => {
                    Finding::decided(false, "stated grade agrees with the measured values")
                }
                (None, Some(_)) => Finding::unknown(
                    &[
                        "patient.tumour.ki67_percent",
                        "patient.tumour.mitoses_per_2mm2",
                    ],
                    "nothing measured to check the stated grade against",
                ),
                (None, None) => Finding::decided(false, "no stated grade to conflict"),
            },
        }
    }
}

/// Three-valued OR (`any`) or AND over member findings.
fn combine(findings: impl Iterator<Item = Finding>, any: bool) -> Finding {
    let mut decisive = Vec::new();
    let mut missing = Vec::new();
    let mut unknown = false;
    let mut values = Vec::new();
    let mut explanations = Vec::new();
    // OR is settled by a MET member, AND by an UNMET one.
    let settles = if any { Outcome::Met } else { Outcome::Unmet };
    for f in findings {
        if f.outcome == settles {
            decisive.push(f);
            continue;
        }
        if f.outcome == Outcome::Unknown {
            unknown = true;
            for m in &f.missing {
                if !missing.contains(m) {
                    missing.push(m.clone());
                }
            }
        }
        values.extend(f.values);
        explanations.push(f.explanation);
    }
    if !decisive.is_empty() {
        let mut out = Finding::new(
            settles,
            decisive
                .iter()
                .map(|f| f.explanation.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        );
        out.values = decisive.into_iter().flat_map(|f| f.values).collect();
        return out;
    }
    let mut out = Finding::new(
        if unknown {
            Outcome::Unknown
        } else if any {
            Outcome::Unmet
        } else {
            Outcome::Met
        },
        explanations.join("; "),
    );
    out.values = values;
    out.missing = if unknown { missing } else { Vec::new() };
    out
}

fn unresectable_or_metastatic(p: &Patient) -> Finding {
    match (p.extent.extent, p.extent.resectable_with_curative_intent) {
        (Some(e @ (Extent::Metastatic | Extent::LocallyAdvancedUnresectable)), _) => {
            Finding::decided(true, format!("disease is {e}")).value(EXTENT, e.label())
        }
        (extent, Some(false)) => {
            let f = Finding::decided(true, "the MDT judges the disease unresectable")
                .value(RESECTABLE, "no");
            match extent {
                Some(e) => f.value(EXTENT, e.label()),
                None => f,
            }
        }
        (Some(e), Some(true)) => Finding::decided(
            false,
            format!("{e} disease judged resectable with curative intent"),
        )
        .value(EXTENT, e.label())
        .value(RESECTABLE, "yes"),
        (Some(e), None) => Finding::unknown(
            &[RESECTABLE],
            format!("{e} disease: resectability not recorded"),
        )
        .value(EXTENT, e.label()),
        (None, _) => Finding::unknown(&[EXTENT, RESECTABLE], "extent of disease not recorded"),
    }
}

fn pregnant_or_breastfeeding(p: &Patient) -> Finding {
    let d = &p.demographics;
    if d.pregnant == Some(true) {
        return Finding::decided(true, "pregnant").value(PREGNANT, "yes");
    }
    if d.breastfeeding == Some(true) {
        return Finding::decided(true, "breastfeeding").value(BREASTFEEDING, "yes");
    }
    if d.sex == Some(Sex::Male) {
        return Finding::decided(false, "not applicable (male)")
            .value("patient.demographics.sex", "male");
    }
    match (d.pregnant, d.breastfeeding) {
        (Some(false), Some(false)) => Finding::decided(false, "neither pregnant nor breastfeeding")
            .value(PREGNANT, "no")
            .value(BREASTFEEDING, "no"),
        (pregnant, breastfeeding) => {
            let missing: Vec<&str> = [
                (pregnant.is_none(), PREGNANT),
                (breastfeeding.is_none(), BREASTFEEDING),
            ]
            .into_iter()
            .filter(|(m, _)| *m)
            .map(|(_, p)| p)
            .collect();
            Finding::unknown(&missing, "pregnancy or breastfeeding not recorded")
        }
    }
}
