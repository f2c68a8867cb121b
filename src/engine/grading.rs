//! WHO grade and differentiation derived from the pathology (reference §0.1, §0.2;
//! clinical README position 6): the higher of the Ki-67 and mitotic grades wins, lung typical
//! carcinoid maps to G1 and atypical to G2, and a stated grade that conflicts with the measured
//! values is flagged while the higher grade is used.

use serde::Deserialize;

use super::finding::{Detail, Shown};
use crate::domain::{Differentiation, GradingSystem, LungClassification, Patient, WhoGrade};

/// Grade cut-offs, read from the policy file so a future WHO edition is a policy change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GradingParameters {
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
pub(crate) struct GradeAssessment {
    /// The grade the rules use; `None` when nothing was recorded to grade from.
    pub grade: Option<WhoGrade>,
    /// How the grade was reached, in words; empty unless the assessment was asked to explain.
    pub basis: String,
    /// Patient values used: (field path, value). A measured value's text is empty unless
    /// asked to explain; which values were used is the same either way (criteria count them).
    pub values: Vec<(&'static str, Shown)>,
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
/// Mitoses per 2 mm² in UCUM: an annotated count per twice a square millimetre.
pub(crate) const MITOSES_UCUM: &str = "{mitoses}/(2.mm2)";
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
        if !patient.has_who_grade() {
            // Position 6: phaeochromocytoma, paraganglioma and medullary thyroid cancer are not
            // graded by the WHO neuroendocrine systems; criteria that need a grade do not apply.
            let site = t.primary_site.map_or("", |s| s.label());
            a.basis = reasons.words(|_| format!("{site} is not graded by the WHO grading"));
            a.differentiation = t.differentiation;
            a.differentiation_basis = match t.differentiation {
                Some(d) => reasons.words(|_| format!("stated: {d}")),
                None => reasons.words(|_| "not recorded".into()),
            };
            return a;
        }
        let lung = t.primary_site.is_some_and(|s| s.uses_lung_classification());

        let measured = if lung {
            self.lung_grade(patient, &mut a, &mut reasons)
        } else {
            let by_ki67 = t.ki67_percent.map(|k| {
                let g = self.grade_by(k, self.ki67_g2_from_percent, self.ki67_g3_above_percent);
                a.values
                    .push((KI67, Shown::measured(reasons.detail, k, "%", "%")));
                reasons.add(|| format!("Ki-67 {k} % gives {g}"));
                g
            });
            let by_mitoses = t.mitoses_per_2mm2.map(|m| {
                let g = self.grade_by(m, self.mitoses_g2_from, self.mitoses_g3_above);
                a.values.push((
                    MITOSES,
                    Shown::measured(reasons.detail, m, "per 2 mm²", MITOSES_UCUM),
                ));
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
        // A report that says both NEC and well (or moderately) differentiated contradicts
        // itself: WHO 2000/2004's "well-differentiated endocrine carcinoma" is a NET today,
        // and morphology separates NET from NEC (reference §0.1). Unless the counts are those
        // of a G3, neither the grade nor the differentiation is taken from it.
        if let (Some(WhoGrade::Nec), Some(d @ (Differentiation::Well | Differentiation::Moderate))) =
            (stated, t.differentiation)
            && measured.is_none_or(|m| m < WhoGrade::G3)
        {
            a.grade = None;
            a.conflict = Some(format!(
                "stated NEC and stated {d} contradict each other (an older 'well-differentiated \
                 endocrine carcinoma' is a NET today): pathology review"
            ));
            a.basis = reasons.words(|_| {
                format!(
                    "stated NEC{edition} and stated {d} contradict each other; no grade is taken"
                )
            });
            a.differentiation_basis = reasons.words(|_| {
                format!(
                    "stated {d}, contradicted by the stated NEC: not taken until pathology review"
                )
            });
            a.missing = vec![WHO_GRADE, DIFFERENTIATION];
            return a;
        }
        if let (Some(s), Some(m)) = (stated, measured)
            && s != m
        {
            let used = s.max(m);
            let conflict = format!(
                "stated grade {s}{edition} conflicts with the measured values ({m}); the higher grade {used} is used"
            );
            a.conflict = Some(match a.conflict.take() {
                Some(lung) => format!("{lung}; {conflict}"),
                None => conflict,
            });
        }
        // WHO 2010's G3 was its neuroendocrine carcinoma category; WHO 2017 and later split it
        // into well-differentiated NET G3 and poorly differentiated NEC (PMC5087808 Table 1), so
        // a G3 says nothing of differentiation unless the report names a later edition.
        let stated_g3_of_later_edition = stated == Some(WhoGrade::G3)
            && t.grading_system
                .is_some_and(|e| e != GradingSystem::Who2010);
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
            // A carcinoma is poorly differentiated by definition (WHO 2019): a report that also
            // says well or moderately differentiated conflicts, and the higher grade wins.
            (Some(d @ (Differentiation::Well | Differentiation::Moderate)), Some(WhoGrade::Nec)) => {
                a.differentiation = Some(Differentiation::Poor);
                let conflict =
                    format!("stated {d} conflicts with the grade NEC; poorly differentiated is used");
                a.conflict = Some(match a.conflict.take() {
                    Some(earlier) => format!("{earlier}; {conflict}"),
                    None => conflict,
                });
                reasons.words(|_| {
                    format!("stated {d}, but a carcinoma (NEC) is poorly differentiated: that is used")
                })
            }
            // TA449 1.1 and CLARINET say "well or moderately differentiated": moderately
            // differentiated is the older term for a well-differentiated (G2) NET (reference §0.1).
            // "Moderately differentiated" is a G2 term: beside a G3 it settles nothing.
            (Some(Differentiation::Moderate), Some(WhoGrade::G3)) => {
                a.differentiation = None;
                let conflict = "stated moderately differentiated (a G2 term) conflicts with the \
                                grade G3: pathology review"
                    .to_string();
                a.conflict = Some(match a.conflict.take() {
                    Some(earlier) => format!("{earlier}; {conflict}"),
                    None => conflict,
                });
                reasons.words(|_| {
                    "stated moderately differentiated, a G2 term, beside a G3: not taken until \
                     pathology review"
                        .into()
                })
            }
            (Some(Differentiation::Moderate), _) => {
                a.differentiation = Some(Differentiation::Well);
                reasons.words(|_| {
                    "stated: moderately differentiated, the older term for a well-differentiated \
                     NET, read as well differentiated"
                        .into()
                })
            }
            (Some(d), _) => reasons.words(|_| format!("stated: {d}")),
            // WHO 2019: NET G1 and G2 are well differentiated by definition (under WHO 2010
            // too), NEC poorly; a G3 is a NET only under WHO 2017 or later.
            (None, Some(WhoGrade::G1 | WhoGrade::G2)) => {
                a.differentiation = Some(Differentiation::Well);
                reasons.words(|_| {
                    format!(
                        "implied by the WHO NET category {}",
                        a.grade.map_or("", |g| g.label())
                    )
                })
            }
            (None, Some(WhoGrade::G3)) if stated_g3_of_later_edition => {
                a.differentiation = Some(Differentiation::Well);
                reasons.words(|_| format!("implied by a NET G3 stated under{edition}"))
            }
            (None, Some(WhoGrade::G3)) => reasons.words(|_| match (stated, t.grading_system) {
                (Some(WhoGrade::G3), Some(GradingSystem::Who2010)) => {
                    "not recorded, and a G3 stated under WHO 2010 does not imply it: WHO 2010's G3 \
                     was neuroendocrine carcinoma, which later editions split into well-differentiated \
                     NET G3 and poorly differentiated NEC"
                        .into()
                }
                (Some(WhoGrade::G3), None) => {
                    "not recorded, and a G3 stated without its WHO edition does not imply it: under \
                     WHO 2010 a G3 was a carcinoma; record the differentiation or the edition"
                        .into()
                }
                _ => "not recorded, and a G3 by measurement does not imply it: morphology, not \
                      Ki-67 alone, separates NET G3 from NEC (reference §0.1)"
                    .into(),
            }),
            (None, Some(WhoGrade::Nec)) => {
                a.differentiation = Some(Differentiation::Poor);
                reasons.words(|_| "implied by the WHO category NEC".into())
            }
            _ => reasons.words(|_| "not recorded".into()),
        };
        a
    }

    /// Lung and thymic NETs: TC/AC from the stated class and from mitoses and necrosis; where
    /// they disagree the higher is used and the conflict recorded (position 6).
    fn lung_grade(
        &self,
        patient: &Patient,
        a: &mut GradeAssessment,
        reasons: &mut Reasons,
    ) -> Option<WhoGrade> {
        let t = &patient.tumour;
        let stated = t.lung_classification.map(|class| {
            a.values.push((LUNG_CLASS, class.label().into()));
            let g = lung_class_grade(class);
            reasons.add(|| format!("{class} maps to {g}"));
            (class, g)
        });
        let measured = self.lung_class_measured(patient, a, reasons);
        match (stated, measured) {
            (Some((s, sg)), Some((m, mg))) if lung_class_rank(s) != lung_class_rank(m) => {
                let (used, g) = if mg > sg { (m, mg) } else { (s, sg) };
                a.conflict = Some(format!(
                    "stated {s} conflicts with the mitoses and necrosis ({m}); the higher, {used} ({g}), is used"
                ));
                Some(g)
            }
            (Some((_, g)), _) | (None, Some((_, g))) => Some(g),
            (None, None) => None,
        }
    }

    /// Reference §0.2: the lung class from mitoses and necrosis, when they settle it.
    fn lung_class_measured(
        &self,
        patient: &Patient,
        a: &mut GradeAssessment,
        reasons: &mut Reasons,
    ) -> Option<(LungClassification, WhoGrade)> {
        let t = &patient.tumour;
        let mitoses = t.mitoses_per_2mm2?;
        a.values.push((
            MITOSES,
            Shown::measured(reasons.detail, mitoses, "per 2 mm²", MITOSES_UCUM),
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
        Some((class, g))
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

/// The lung classes in order of grade; the two carcinomas rank alike.
fn lung_class_rank(class: LungClassification) -> u8 {
    match class {
        LungClassification::TypicalCarcinoid => 0,
        LungClassification::AtypicalCarcinoid => 1,
        LungClassification::LargeCellNec | LungClassification::SmallCellCarcinoma => 2,
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

    #[test]
    fn a_g3_stated_without_its_edition_does_not_imply_the_differentiation() {
        // Position 6: under WHO 2010 a G3 was a carcinoma, so a report that names no edition
        // cannot say whether its G3 is a NET G3 or a NEC (reference §0.1).
        let mut p = tumour(PrimarySite::Pancreas);
        p.tumour.who_grade = Some(WhoGrade::G3);
        p.tumour.ki67_percent = Some(70.0);
        let a = who2019().assess(&p, Detail::EXPLAINED);
        assert_eq!(a.grade, Some(WhoGrade::G3));
        assert_eq!(a.differentiation, None);
        assert!(
            a.differentiation_basis.contains("without its WHO edition"),
            "{}",
            a.differentiation_basis
        );
        // Under WHO 2017 or later the same G3 is a NET G3.
        p.tumour.grading_system = Some(GradingSystem::Who2017);
        let a = who2019().assess(&p, Detail::EXPLAINED);
        assert_eq!(a.differentiation, Some(Differentiation::Well));
    }

    #[test]
    fn a_measured_g1_or_g2_implies_well_differentiated_and_a_measured_g3_does_not() {
        // WHO 2019: NET G1 and G2 are well differentiated; morphology, not Ki-67 alone,
        // separates NET G3 from NEC (reference §0.1).
        for (ki67, mitoses, implied) in [
            (2.0, None, Some(Differentiation::Well)),
            (20.0, Some(19.0), Some(Differentiation::Well)),
            (12.0, Some(25.0), None),
            (35.0, None, None),
        ] {
            let mut p = tumour(PrimarySite::JejunumIleum);
            p.tumour.ki67_percent = Some(ki67);
            p.tumour.mitoses_per_2mm2 = mitoses;
            let a = who2019().assess(&p, Detail::EXPLAINED);
            assert_eq!(
                a.differentiation, implied,
                "Ki-67 {ki67}, mitoses {mitoses:?}"
            );
        }
    }

    #[test]
    fn moderately_differentiated_is_read_as_well_differentiated() {
        // TA449 1.1 and CLARINET: "well or moderately differentiated" (reference §0.1, §10).
        let mut p = tumour(PrimarySite::Pancreas);
        p.tumour.differentiation = Some(Differentiation::Moderate);
        p.tumour.ki67_percent = Some(8.0);
        let a = who2019().assess(&p, Detail::EXPLAINED);
        assert_eq!(a.differentiation, Some(Differentiation::Well));
        assert!(a.differentiation_basis.contains("older term"));
        assert_eq!(a.conflict, None);
        // A G2 term beside a measured G3 settles nothing, and is a conflict for pathology review.
        p.tumour.ki67_percent = Some(30.0);
        let a = who2019().assess(&p, Detail::EXPLAINED);
        assert_eq!(a.differentiation, None);
        assert!(a.conflict.is_some_and(|c| c.contains("moderately")));
    }

    #[test]
    fn a_lung_class_the_counts_contradict_is_flagged_and_the_higher_used() {
        // Reference §0.2: > 10 mitoses per 2 mm² is a carcinoma whatever the stated class.
        let mut p = tumour(PrimarySite::Lung);
        p.tumour.lung_classification = Some(LungClassification::TypicalCarcinoid);
        p.tumour.mitoses_per_2mm2 = Some(15.0);
        p.tumour.necrosis = Some(true);
        let a = who2019().assess(&p, Detail::EXPLAINED);
        assert_eq!(a.grade, Some(WhoGrade::Nec));
        assert_eq!(a.differentiation, Some(Differentiation::Poor));
        let conflict = a.conflict.unwrap_or_default();
        assert!(
            conflict.contains("typical carcinoid") && conflict.contains("large-cell"),
            "{conflict}"
        );
        // Counts that agree with the stated class raise nothing.
        p.tumour.mitoses_per_2mm2 = Some(1.0);
        p.tumour.necrosis = Some(false);
        let a = who2019().assess(&p, Detail::EXPLAINED);
        assert_eq!((a.grade, a.conflict), (Some(WhoGrade::G1), None));
    }

    #[test]
    fn sites_outside_the_who_grading_get_no_grade_and_ask_for_none() {
        // Position 6: phaeochromocytoma, paraganglioma and medullary thyroid cancer are not
        // graded by the WHO neuroendocrine systems, even when a Ki-67 is sent.
        for site in [
            PrimarySite::Phaeochromocytoma,
            PrimarySite::Paraganglioma,
            PrimarySite::MedullaryThyroid,
        ] {
            let mut p = tumour(site);
            p.tumour.ki67_percent = Some(5.0);
            let a = who2019().assess(&p, Detail::EXPLAINED);
            assert_eq!((a.grade, a.missing.len()), (None, 0), "{site}");
            assert!(a.basis.contains("not graded"), "{}", a.basis);
        }
    }

    #[test]
    fn a_report_saying_both_nec_and_well_differentiated_settles_neither_unless_the_counts_are_g3() {
        // WHO 2000/2004's "well-differentiated endocrine carcinoma" is a NET today; WHO 2019's
        // NEC is poorly differentiated by definition (reference §0.1).
        let mut p = tumour(PrimarySite::Pancreas);
        p.tumour.differentiation = Some(Differentiation::Well);
        p.tumour.who_grade = Some(WhoGrade::Nec);
        p.tumour.ki67_percent = Some(8.0);
        let a = who2019().assess(&p, Detail::EXPLAINED);
        assert_eq!((a.grade, a.differentiation), (None, None));
        assert_eq!(a.missing, vec![WHO_GRADE, DIFFERENTIATION]);
        assert!(a.conflict.is_some());
        // With the counts of a G3 the carcinoma stands, poorly differentiated.
        p.tumour.ki67_percent = Some(60.0);
        let a = who2019().assess(&p, Detail::EXPLAINED);
        assert_eq!(a.grade, Some(WhoGrade::Nec));
        assert_eq!(a.differentiation, Some(Differentiation::Poor));
        assert!(a.conflict.is_some());
    }
}
