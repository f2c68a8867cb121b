//! The check catalogue as the policy file writes it: `check = "<name>"` and `params = { .. }`.
//! [`CheckSpec`] is the one list of check names and their parameters (serde reads the file into
//! it, and lists its names when a file names an unknown check); [`compile`] turns a spec into the
//! [`Check`] the engine evaluates, resolving input names and refusing values out of range.

use serde::Deserialize;

use super::criteria::{
    BOOLEAN_INPUTS, BooleanInput, Check, DATE_INPUTS, DateInput, NUMERIC_INPUTS, NumericInput,
    RecordedInput,
};
use crate::domain::{
    ChildPugh, Differentiation, Extent, ExtrahepaticSite, FunctionalSyndrome, Nation, PrimarySite,
    SsaIndication, Therapy, WelshRegion, WhoGrade,
};

/// Every check a policy may name, with its parameters. Inputs are named by their path without
/// the `patient.` prefix (`tumour.ki67_percent`).
#[derive(Debug, Deserialize)]
#[serde(
    tag = "check",
    content = "params",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub(crate) enum CheckSpec {
    /// Age on the as-of date at least `years`.
    AgeAtLeast {
        years: i32,
    },
    /// Age on the as-of date under `years`.
    AgeUnder {
        years: i32,
    },
    PrimarySiteIn {
        sites: Vec<PrimarySite>,
    },
    UnresectableOrMetastatic {},
    ProgressiveDisease {},
    DifferentiationIn {
        accepted: Vec<Differentiation>,
    },
    /// WHO grades: g1, g2, g3, nec, minen.
    GradeIn {
        grades: Vec<WhoGrade>,
    },
    /// SSTR uptake at least a Krenning score 0-4.
    KrenningAtLeast {
        score: i32,
    },
    /// SSTR uptake below a Krenning score 0-4.
    KrenningBelow {
        score: i32,
    },
    /// A completed course of one of `therapies`: at least `administrations` given.
    PriorCompletedCourse {
        therapies: Vec<Therapy>,
        administrations: i32,
    },
    /// symptom_control or tumour_control.
    SsaIndicationAllows {
        indication: SsaIndication,
    },
    /// A numeric input is recorded.
    Recorded {
        input: String,
    },
    /// A numeric or date input is absent (MET when absent, UNMET when recorded).
    NotRecorded {
        input: String,
    },
    PregnantOrBreastfeeding {},
    PriorTherapyAnyOf {
        therapies: Vec<Therapy>,
    },
    /// england or wales.
    NationIs {
        nation: Nation,
    },
    /// north or south_mid.
    WelshRegionIs {
        region: WelshRegion,
    },
    /// A numeric input below `threshold`, read from `fallback_input` when it is absent.
    ValueBelow {
        input: String,
        threshold: f64,
        fallback_input: Option<String>,
    },
    ValueAbove {
        input: String,
        threshold: f64,
    },
    ValueAboveMultipleOf {
        input: String,
        reference: String,
        multiple: f64,
    },
    /// A yes/no input is yes.
    IsTrue {
        input: String,
    },
    /// A yes/no input is no.
    IsFalse {
        input: String,
    },
    /// A date input more than `days` before the as-of date.
    OlderThanDays {
        input: String,
        days: i64,
    },
    StatedGradeConflicts {},
    /// MET when the value ≤ `limit`.
    ValueAtMost {
        input: String,
        limit: f64,
    },
    /// MET when the value ≥ `limit`.
    ValueAtLeast {
        input: String,
        limit: f64,
    },
    ExtentIn {
        extents: Vec<Extent>,
    },
    /// Functional syndromes (none = non-functional).
    FunctionalSyndromeIn {
        syndromes: Vec<FunctionalSyndrome>,
    },
    ExtrahepaticSitesWithin {
        allowed: Vec<ExtrahepaticSite>,
    },
    ExtrahepaticSiteAnyOf {
        sites: Vec<ExtrahepaticSite>,
    },
    MibgInterferingDrugTaken {},
    ChildPughIn {
        classes: Vec<ChildPugh>,
    },
    /// MET when any of `criteria` (ids defined above it in the policy) is MET.
    AnyOf {
        criteria: Vec<String>,
    },
    /// MET when every one of `criteria` (ids defined above it in the policy) is MET.
    AllOf {
        criteria: Vec<String>,
    },
}

/// Reads check `name` with its parameters and compiles it.
pub(crate) fn compile(name: &str, params: &toml::Table) -> Result<Check, String> {
    let mut written = toml::Table::new();
    written.insert("check".into(), toml::Value::String(name.to_string()));
    written.insert("params".into(), toml::Value::Table(params.clone()));
    let spec = CheckSpec::deserialize(toml::Value::Table(written)).map_err(|e| {
        let message = e.message().trim().to_string();
        match message.split_once("expected one of ") {
            Some((_, names)) if message.starts_with("unknown variant") => {
                let names = names.replace('`', "");
                format!("unknown check '{name}'; the catalogue has: {names}")
            }
            _ => format!("invalid parameters: {message}"),
        }
    })?;
    spec.compile()
}

impl CheckSpec {
    /// The check the engine evaluates: inputs resolved, values in range, lists not empty.
    pub fn compile(self) -> Result<Check, String> {
        use CheckSpec as S;
        Ok(match self {
            S::AgeAtLeast { years } => Check::Age {
                years,
                at_least: true,
            },
            S::AgeUnder { years } => Check::Age {
                years,
                at_least: false,
            },
            S::PrimarySiteIn { sites } => Check::PrimarySiteIn {
                sites: non_empty(sites, "sites")?,
            },
            S::UnresectableOrMetastatic {} => Check::UnresectableOrMetastatic,
            S::ProgressiveDisease {} => Check::ProgressiveDisease,
            S::DifferentiationIn { accepted } => Check::DifferentiationIn {
                accepted: non_empty(accepted, "accepted")?,
            },
            S::GradeIn { grades } => Check::GradeIn {
                grades: non_empty(grades, "grades")?,
            },
            S::KrenningAtLeast { score } => Check::Krenning {
                score: krenning(score)?,
                at_least: true,
            },
            S::KrenningBelow { score } => Check::Krenning {
                score: krenning(score)?,
                at_least: false,
            },
            S::PriorCompletedCourse {
                therapies,
                administrations,
            } => {
                if administrations < 1 {
                    return Err("administrations must be at least 1".into());
                }
                Check::PriorCompletedCourse {
                    therapies: non_empty(therapies, "therapies")?,
                    administrations,
                }
            }
            S::SsaIndicationAllows { indication } => {
                if indication == SsaIndication::SymptomAndTumourControl {
                    return Err("indication must be symptom_control or tumour_control".into());
                }
                Check::SsaIndicationAllows { indication }
            }
            S::Recorded { input } => Check::Recorded {
                input: numeric(&input)?,
            },
            S::NotRecorded { input } => Check::NotRecorded {
                input: match numeric(&input) {
                    Ok(i) => RecordedInput::Numeric(i),
                    Err(_) => RecordedInput::Date(
                        date_input(&input)
                            .map_err(|_| format!("unknown numeric or date input '{input}'"))?,
                    ),
                },
            },
            S::PregnantOrBreastfeeding {} => Check::PregnantOrBreastfeeding,
            S::PriorTherapyAnyOf { therapies } => Check::PriorTherapyAnyOf {
                therapies: non_empty(therapies, "therapies")?,
            },
            S::NationIs { nation } => Check::NationIs { nation },
            S::WelshRegionIs { region } => Check::WelshRegionIs { region },
            S::ValueBelow {
                input,
                threshold,
                fallback_input,
            } => Check::ValueBelow {
                input: numeric(&input)?,
                fallback: fallback_input.as_deref().map(numeric).transpose()?,
                threshold,
            },
            S::ValueAbove { input, threshold } => Check::ValueAbove {
                input: numeric(&input)?,
                threshold,
            },
            S::ValueAboveMultipleOf {
                input,
                reference,
                multiple,
            } => Check::ValueAboveMultipleOf {
                input: numeric(&input)?,
                reference: numeric(&reference)?,
                multiple,
            },
            S::IsTrue { input } => Check::IsTrue {
                input: boolean(&input)?,
            },
            S::IsFalse { input } => Check::IsFalse {
                input: boolean(&input)?,
            },
            S::OlderThanDays { input, days } => Check::OlderThanDays {
                input: date_input(&input)?,
                days,
            },
            S::StatedGradeConflicts {} => Check::StatedGradeConflicts,
            S::ValueAtMost { input, limit } => Check::ValueAtMost {
                input: numeric(&input)?,
                limit,
            },
            S::ValueAtLeast { input, limit } => Check::ValueAtLeast {
                input: numeric(&input)?,
                limit,
            },
            S::ExtentIn { extents } => Check::ExtentIn {
                extents: non_empty(extents, "extents")?,
            },
            S::FunctionalSyndromeIn { syndromes } => Check::FunctionalSyndromeIn {
                syndromes: non_empty(syndromes, "syndromes")?,
            },
            S::ExtrahepaticSitesWithin { allowed } => Check::ExtrahepaticSitesWithin { allowed },
            S::ExtrahepaticSiteAnyOf { sites } => Check::ExtrahepaticSiteAnyOf {
                sites: non_empty(sites, "sites")?,
            },
            S::MibgInterferingDrugTaken {} => Check::MibgInterferingDrugTaken,
            S::ChildPughIn { classes } => Check::ChildPughIn {
                classes: non_empty(classes, "classes")?,
            },
            S::AnyOf { criteria } => composite(true, criteria)?,
            S::AllOf { criteria } => composite(false, criteria)?,
        })
    }
}

/// Krenning's scale runs 0 to 4 (reference.md, "Krenning score").
fn krenning(score: i32) -> Result<i32, String> {
    if (0..=4).contains(&score) {
        Ok(score)
    } else {
        Err(format!("score must be a Krenning score 0-4, got {score}"))
    }
}

fn composite(any: bool, names: Vec<String>) -> Result<Check, String> {
    if names.len() < 2 {
        return Err("criteria must name at least two criteria".into());
    }
    Ok(Check::Composite { any, names })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).expect("table")
    }

    #[test]
    fn the_catalogue_refuses_a_krenning_score_outside_the_scale_and_unknown_names() {
        let Err(refused) = compile("krenning_at_least", &table("score = 5")) else {
            panic!("a Krenning score of 5 is accepted");
        };
        assert!(refused.contains("Krenning score 0-4"), "{refused}");
        assert!(matches!(
            compile("krenning_below", &table("score = 3")),
            Ok(Check::Krenning {
                score: 3,
                at_least: false
            })
        ));
        let Err(unknown) = compile("krenning_above", &table("score = 3")) else {
            panic!("an unknown check is accepted");
        };
        assert!(
            unknown.starts_with("unknown check 'krenning_above'; the catalogue has: ")
                && unknown.contains(" krenning_at_least, ")
                && unknown.ends_with(", all_of"),
            "{unknown}"
        );
        let Err(extra) = compile("krenning_at_least", &table("score = 3\nscan = \"PET\"")) else {
            panic!("an unknown parameter is accepted");
        };
        assert!(extra.contains("scan"), "{extra}");
    }

    /// A check without parameters takes an empty table and refuses any parameter.
    #[test]
    fn a_check_without_parameters_refuses_one() {
        assert!(matches!(
            compile("progressive_disease", &toml::Table::new()),
            Ok(Check::ProgressiveDisease)
        ));
        assert!(compile("progressive_disease", &table("years = 3")).is_err());
    }

    /// Inputs are resolved by name, and a misspelt one is refused with the known names.
    #[test]
    fn inputs_are_named_without_the_patient_prefix() {
        let Ok(Check::ValueAbove { input, threshold }) = compile(
            "value_above",
            &table("input = \"tumour.ki67_percent\"\nthreshold = 20.0"),
        ) else {
            panic!("value_above does not compile");
        };
        assert_eq!(input.path, "patient.tumour.ki67_percent");
        assert_eq!(threshold, 20.0);
        let Err(refused) = compile(
            "value_above",
            &table("input = \"tumour.ki68_percent\"\nthreshold = 20.0"),
        ) else {
            panic!("an unknown input is accepted");
        };
        assert!(refused.contains("known inputs: "), "{refused}");
        let Err(missing) = compile("value_above", &table("input = \"tumour.ki67_percent\"")) else {
            panic!("a missing threshold is accepted");
        };
        assert!(missing.contains("threshold"), "{missing}");
    }
}
