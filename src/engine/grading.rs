//! WHO grade and differentiation derived from the pathology (reference §0.1, §0.2;
//! clinical README position 6): the higher of the Ki-67 and mitotic grades wins, lung typical
//! carcinoid maps to G1 and atypical to G2, and a stated grade that conflicts with the measured
//! values is flagged while the higher grade is used.

use serde::Deserialize;

use super::criteria::Detail;
use crate::domain::{Differentiation, GradingSystem, LungClassification, Patient, WhoGrade};

/// Grade cut-offs, read from the policy file so a future WHO edition is a policy change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradingParameters {
    /// Source id for the digestive (GEP) table.
    pub source: String,
    /// Source id for the lung/thymic table.
    pub lung_source: String,
    /// Ki-67 at or above this is at least G2 (WHO 2019: 3 %).
    pub ki67_g2_from_percent: f64,
    /// Ki-67 above this is G3 (WHO 2019: 20 %).
    pub ki67_g3_above_percent: f64,
    /// Mitoses at or above this are at least G2 (WHO 2019: 2 per 2 mm²).
    pub mitoses_g2_from: f64,
    /// Mitoses above this are G3 (WHO 2019: 20 per 2 mm²).
    pub mitoses_g3_above: f64,
    /// Lung: mitoses at or above this make an atypical carcinoid (2 per 2 mm²).
    pub lung_mitoses_atypical_from: f64,
    /// Lung: mitoses above this make a carcinoma (10 per 2 mm²).
    pub lung_mitoses_carcinoma_above: f64,
}

/// What the service concluded about grade and differentiation, and from what.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GradeAssessment {
    /// The grade the rules use; `None` when nothing was recorded to grade from.
    pub grade: Option<WhoGrade>,
    /// How the grade was reached, in words; empty unless the assessment was asked to explain.
    pub basis: String,
    /// Patient values used: (field path, value). A measured value's text is empty unless
    /// asked to explain; which values were used is the same either way (criteria count them).
    pub values: Vec<(&'static str, super::criteria::Text)>,
    /// Inputs that would settle the grade when it is unknown.
    pub missing: Vec<&'static str>,
    /// Set when the stated grade disagrees with the measured values.
    pub conflict: Option<String>,
    /// Differentiation as stated, or implied by a WHO NET/NEC category.
    pub differentiation: Option<Differentiation>,
    /// Where the differentiation came from, in words; empty unless asked to explain.
    pub differentiation_basis: String,
}

/// The words behind a grade, written only when the answer explains: BASIC answers show no
/// basis or values, and their sentences cost more to write than the grade itself.
struct Reasons {
    detail: Detail,
    said: Vec<String>,
}

impl Reasons {
    fn add(&mut self, reason: impl FnOnce() -> String) {
        if self.detail.explains() {
            self.said.push(reason());
        }
    }

    fn words(&self, words: impl FnOnce(&[String]) -> String) -> String {
        if self.detail.explains() {
            words(&self.said)
        } else {
            String::new()
        }
    }
}

const KI67: &str = "patient.tumour.ki67_percent";
const MITOSES: &str = "patient.tumour.mitoses_per_2mm2";
pub(super) const WHO_GRADE: &str = "patient.tumour.who_grade";
const LUNG_CLASS: &str = "patient.tumour.lung_classification";
const NECROSIS: &str = "patient.tumour.necrosis";
pub(super) const DIFFERENTIATION: &str = "patient.tumour.differentiation";

impl GradingParameters {
    fn grade_by(&self, value: f64, g2_from: f64, g3_above: f64) -> WhoGrade {
        if value > g3_above {
            WhoGrade::G3
        } else if value >= g2_from {
            WhoGrade::G2
        } else {
            WhoGrade::G1
        }
    }

    /// Derives grade and differentiation for `patient`; the basis in words only when
    /// `detail` explains (every other field is the same either way).
    pub fn assess(&self, patient: &Patient, detail: Detail) -> GradeAssessment {
        let t = &patient.tumour;
        let mut a = GradeAssessment::default();
        let mut reasons = Reasons {
            detail,
            said: Vec::new(),
        };
        let lung = t.primary_site.is_some_and(|s| s.uses_lung_classification());

        let measured = if lung {
            self.lung_grade(patient, &mut a, &mut reasons)
        } else {
            let by_ki67 = t.ki67_percent.map(|k| {
                let g = self.grade_by(k, self.ki67_g2_from_percent, self.ki67_g3_above_percent);
                a.values
                    .push((KI67, reasons.detail.text(|| format!("{k} %"))));
                reasons.add(|| format!("Ki-67 {k} % gives {g}"));
                g
            });
            let by_mitoses = t.mitoses_per_2mm2.map(|m| {
                let g = self.grade_by(m, self.mitoses_g2_from, self.mitoses_g3_above);
                a.values
                    .push((MITOSES, reasons.detail.text(|| format!("{m} per 2 mm²"))));
                reasons.add(|| format!("mitoses {m} per 2 mm² give {g}"));
                g
            });
            by_ki67.max(by_mitoses)
        };
        // WHO 2019: a poorly differentiated neuroendocrine neoplasm is a carcinoma whatever its Ki-67.
        let measured = if t.differentiation == Some(Differentiation::Poor) {
            a.values
                .push((DIFFERENTIATION, Differentiation::Poor.label().into()));
            reasons.add(|| "poorly differentiated morphology makes it NEC".into());
            Some(measured.map_or(WhoGrade::Nec, |g| g.max(WhoGrade::Nec)))
        } else {
            measured
        };

        let stated = t.who_grade;
        let edition = Edition(t.grading_system);
        if let Some(s) = stated {
            a.values.push((WHO_GRADE, s.label().into()));
            reasons.add(|| format!("stated grade {s}{edition}"));
        }
        a.grade = stated.max(measured);
        if let (Some(s), Some(m)) = (stated, measured)
            && s != m
        {
            let used = s.max(m);
            a.conflict = Some(format!(
                "stated grade {s}{edition} conflicts with the measured values ({m}); the higher grade {used} is used"
            ));
        }
        // WHO 2010's G3 was its neuroendocrine carcinoma category; WHO 2017 and 2019 split it
        // into well-differentiated NET G3 and poorly differentiated NEC (PMC5087808 Table 1).
        let g3_under_who_2010 =
            stated == Some(WhoGrade::G3) && t.grading_system == Some(GradingSystem::Who2010);
        match a.grade {
            Some(g) => {
                a.basis = reasons.words(|said| {
                    if said.len() > 1 {
                        format!("{}; the higher grade {g} is used", said.join("; "))
                    } else {
                        said.join("; ")
                    }
                })
            }
            None => {
                a.basis =
                    reasons.words(|_| "no grade stated and nothing measured to grade from".into());
                a.missing = if lung {
                    vec![WHO_GRADE, LUNG_CLASS, MITOSES, NECROSIS]
                } else {
                    vec![WHO_GRADE, KI67, MITOSES]
                };
            }
        }

        a.differentiation = t.differentiation;
        a.differentiation_basis = match (t.differentiation, a.grade) {
            (Some(d), _) => reasons.words(|_| format!("stated: {d}")),
            (None, Some(WhoGrade::G3)) if g3_under_who_2010 => reasons.words(|_| {
                "not recorded, and a G3 stated under WHO 2010 does not imply it: WHO 2010's G3 \
                 was neuroendocrine carcinoma, which later editions split into well-differentiated \
                 NET G3 and poorly differentiated NEC"
                    .into()
            }),
            // WHO 2019: NET G1-G3 are well differentiated by definition, NEC poorly.
            (None, Some(WhoGrade::G1 | WhoGrade::G2 | WhoGrade::G3))
                if stated.is_some() || lung =>
            {
                a.differentiation = Some(Differentiation::Well);
                reasons.words(|_| {
                    format!(
                        "implied by the WHO NET category {}",
                        a.grade.map_or("", |g| g.label())
                    )
                })
            }
            (None, Some(WhoGrade::Nec)) => {
                a.differentiation = Some(Differentiation::Poor);
                reasons.words(|_| "implied by the WHO category NEC".into())
            }
            _ => reasons.words(|_| "not recorded".into()),
        };
        a
    }

    /// Lung and thymic NETs: TC/AC from the stated class, or from mitoses and necrosis.
    fn lung_grade(
        &self,
        patient: &Patient,
        a: &mut GradeAssessment,
        reasons: &mut Reasons,
    ) -> Option<WhoGrade> {
        let t = &patient.tumour;
        if let Some(class) = t.lung_classification {
            a.values.push((LUNG_CLASS, class.label().into()));
            let g = lung_class_grade(class);
            reasons.add(|| format!("{class} maps to {g}"));
            return Some(g);
        }
        let mitoses = t.mitoses_per_2mm2?;
        a.values.push((
            MITOSES,
            reasons.detail.text(|| format!("{mitoses} per 2 mm²")),
        ));
        if let Some(n) = t.necrosis {
            a.values
                .push((NECROSIS, if n { "present" } else { "absent" }.into()));
        }
        let class = if mitoses > self.lung_mitoses_carcinoma_above {
            LungClassification::LargeCellNec
        } else if mitoses >= self.lung_mitoses_atypical_from || t.necrosis == Some(true) {
            LungClassification::AtypicalCarcinoid
        } else if t.necrosis == Some(false) {
            LungClassification::TypicalCarcinoid
        } else {
            // Fewer than 2 mitoses: typical or atypical turns on necrosis, which is not recorded.
            return None;
        };
        let g = lung_class_grade(class);
        reasons.add(|| {
            format!("mitoses {mitoses} per 2 mm² and necrosis make it {class}, mapped to {g}")
        });
        Some(g)
    }
}

/// The WHO edition a stated grade follows, written after the grade: " (WHO 2010)", or nothing
/// when the report did not say.
#[derive(Clone, Copy)]
struct Edition(Option<GradingSystem>);

impl std::fmt::Display for Edition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(e) => write!(f, " ({e})"),
            None => Ok(()),
        }
    }
}

/// Reference §0.2: TC → G1, AC → G2 (PMC5359105), carcinomas are high grade.
fn lung_class_grade(class: LungClassification) -> WhoGrade {
    match class {
        LungClassification::TypicalCarcinoid => WhoGrade::G1,
        LungClassification::AtypicalCarcinoid => WhoGrade::G2,
        LungClassification::LargeCellNec | LungClassification::SmallCellCarcinoma => WhoGrade::Nec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PrimarySite;

    fn who2019() -> GradingParameters {
        GradingParameters {
            source: "who".into(),
            lung_source: "who-lung".into(),
            ki67_g2_from_percent: 3.0,
            ki67_g3_above_percent: 20.0,
            mitoses_g2_from: 2.0,
            mitoses_g3_above: 20.0,
            lung_mitoses_atypical_from: 2.0,
            lung_mitoses_carcinoma_above: 10.0,
        }
    }

    fn tumour(site: PrimarySite) -> Patient {
        let mut p = Patient::default();
        p.tumour.primary_site = Some(site);
        p
    }

    #[test]
    fn ki67_boundaries_follow_who_2019() {
        // WHO 2019: G1 < 3 %, G2 3-20 %, G3 > 20 %.
        for (ki67, grade) in [
            (2.9, WhoGrade::G1),
            (3.0, WhoGrade::G2),
            (20.0, WhoGrade::G2),
            (20.1, WhoGrade::G3),
        ] {
            let mut p = tumour(PrimarySite::JejunumIleum);
            p.tumour.ki67_percent = Some(ki67);
            assert_eq!(
                who2019().assess(&p, Detail::EXPLAINED).grade,
                Some(grade),
                "Ki-67 {ki67}"
            );
        }
    }

    #[test]
    fn the_higher_of_ki67_and_mitoses_wins() {
        let mut p = tumour(PrimarySite::Pancreas);
        p.tumour.ki67_percent = Some(2.0);
        p.tumour.mitoses_per_2mm2 = Some(25.0);
        assert_eq!(
            who2019().assess(&p, Detail::EXPLAINED).grade,
            Some(WhoGrade::G3)
        );
    }

    #[test]
    fn stated_grade_lower_than_measured_is_flagged_and_the_higher_used() {
        let mut p = tumour(PrimarySite::Pancreas);
        p.tumour.who_grade = Some(WhoGrade::G1);
        p.tumour.ki67_percent = Some(8.0);
        let a = who2019().assess(&p, Detail::EXPLAINED);
        assert_eq!(a.grade, Some(WhoGrade::G2));
        assert!(a.conflict.is_some());
    }

    #[test]
    fn a_g3_stated_under_who_2010_does_not_imply_the_differentiation() {
        // WHO 2010's G3 was neuroendocrine carcinoma; WHO 2019 splits it into well-differentiated
        // NET G3 and poorly differentiated NEC (PMC5087808 Table 1; reference §0.1).
        let mut p = tumour(PrimarySite::Pancreas);
        p.tumour.who_grade = Some(WhoGrade::G3);
        p.tumour.grading_system = Some(GradingSystem::Who2010);
        let a = who2019().assess(&p, Detail::EXPLAINED);
        assert_eq!(a.grade, Some(WhoGrade::G3));
        assert_eq!(a.differentiation, None);
        assert_eq!(a.basis, "stated grade G3 (WHO 2010)");
        assert!(
            a.differentiation_basis
                .contains("WHO 2010's G3 was neuroendocrine carcinoma"),
            "{}",
            a.differentiation_basis
        );

        // The same stated grade under WHO 2019 is a NET G3, well differentiated by definition.
        p.tumour.grading_system = Some(GradingSystem::Who2019);
        let a = who2019().assess(&p, Detail::EXPLAINED);
        assert_eq!(a.differentiation, Some(Differentiation::Well));
        // And a WHO 2010 G2 was a NET: well differentiated as well.
        p.tumour.grading_system = Some(GradingSystem::Who2010);
        p.tumour.who_grade = Some(WhoGrade::G2);
        let a = who2019().assess(&p, Detail::EXPLAINED);
        assert_eq!(a.differentiation, Some(Differentiation::Well));
    }

    #[test]
    fn a_conflict_names_the_edition_the_stated_grade_follows() {
        // WHO 2010 graded Ki-67 above 2 % as G2; WHO 2019 grades 2.5 % as G1 (reference §0.1).
        let mut p = tumour(PrimarySite::JejunumIleum);
        p.tumour.who_grade = Some(WhoGrade::G2);
        p.tumour.grading_system = Some(GradingSystem::Who2010);
        p.tumour.ki67_percent = Some(2.5);
        let a = who2019().assess(&p, Detail::EXPLAINED);
        assert_eq!(a.grade, Some(WhoGrade::G2));
        assert_eq!(
            a.conflict.as_deref(),
            Some(
                "stated grade G2 (WHO 2010) conflicts with the measured values (G1); \
                 the higher grade G2 is used"
            )
        );
    }

    #[test]
    fn lung_carcinoids_map_to_nice_grades() {
        let mut p = tumour(PrimarySite::Lung);
        p.tumour.lung_classification = Some(LungClassification::AtypicalCarcinoid);
        let a = who2019().assess(&p, Detail::EXPLAINED);
        assert_eq!(a.grade, Some(WhoGrade::G2));
        assert_eq!(a.differentiation, Some(Differentiation::Well));

        let mut p = tumour(PrimarySite::Lung);
        p.tumour.mitoses_per_2mm2 = Some(1.0);
        p.tumour.necrosis = Some(false);
        assert_eq!(
            who2019().assess(&p, Detail::EXPLAINED).grade,
            Some(WhoGrade::G1)
        );
        p.tumour.necrosis = None;
        assert_eq!(
            who2019().assess(&p, Detail::EXPLAINED).grade,
            None,
            "typical vs atypical needs necrosis"
        );
    }

    #[test]
    fn nothing_to_grade_from_names_the_inputs() {
        let a = who2019().assess(&tumour(PrimarySite::JejunumIleum), Detail::EXPLAINED);
        assert_eq!(a.grade, None);
        assert_eq!(a.missing, vec![WHO_GRADE, KI67, MITOSES]);
    }

    #[test]
    fn a_basic_assessment_differs_from_an_explained_one_only_in_its_words() {
        // Every path through the grading: GEP by Ki-67, mitoses or both, a stated grade in
        // conflict, poorly differentiated, lung by class or by mitoses and necrosis, a WHO 2010
        // G3, nothing.
        let mut cases = Vec::new();
        let mut p = tumour(PrimarySite::Pancreas);
        p.tumour.ki67_percent = Some(8.0);
        cases.push(p.clone());
        p.tumour.mitoses_per_2mm2 = Some(25.0);
        p.tumour.who_grade = Some(WhoGrade::G1);
        cases.push(p.clone());
        p.tumour.differentiation = Some(Differentiation::Poor);
        cases.push(p);
        let mut p = tumour(PrimarySite::Lung);
        p.tumour.lung_classification = Some(LungClassification::TypicalCarcinoid);
        cases.push(p);
        let mut p = tumour(PrimarySite::Lung);
        p.tumour.mitoses_per_2mm2 = Some(4.0);
        p.tumour.necrosis = Some(true);
        cases.push(p);
        let mut p = tumour(PrimarySite::JejunumIleum);
        p.tumour.who_grade = Some(WhoGrade::G2);
        cases.push(p);
        let mut p = tumour(PrimarySite::Pancreas);
        p.tumour.who_grade = Some(WhoGrade::G3);
        p.tumour.grading_system = Some(GradingSystem::Who2010);
        cases.push(p);
        cases.push(tumour(PrimarySite::JejunumIleum));
        // Measured numbers are written only when explained; stated labels cost nothing.
        let is_measured = |field: &str| field == KI67 || field == MITOSES;
        for p in &cases {
            let explained = who2019().assess(p, Detail::EXPLAINED);
            let basic = who2019().assess(p, Detail::OUTCOME);
            assert!(!explained.basis.is_empty() && !explained.differentiation_basis.is_empty());
            assert_eq!(
                basic,
                GradeAssessment {
                    basis: String::new(),
                    differentiation_basis: String::new(),
                    values: explained
                        .values
                        .iter()
                        .map(|(field, text)| (
                            *field,
                            if is_measured(field) {
                                "".into()
                            } else {
                                text.clone()
                            }
                        ))
                        .collect(),
                    ..explained.clone()
                },
                "{:?}",
                p.tumour
            );
        }
    }
}
