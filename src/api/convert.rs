//! Proto ⇄ domain. Decoding collects every field violation; nothing is clamped or defaulted.

use chrono::{Datelike, NaiveDate};

use super::citations::Citations;
use crate::domain::{self, FieldName, Patient, Violation};
use crate::engine::criteria::Comparison;
use crate::engine::evaluate::{
    CriterionReport, EligibilityAnswer, FlagKind, FlagReport, FundingAnswer,
};
use crate::engine::finding::Quantity;
use crate::engine::grading::GradeAssessment;
use crate::engine::policy::{
    Evidence, FundingRoute, Period, Policy, PriorApproval, Role, Severity, Status,
};
use crate::engine::{Facts, Outcome};
use crate::google::r#type::Date as ProtoDate;
use crate::pb;

/// A domain vocabulary that mirrors a proto enum variant for variant.
pub trait Bridge: Sized + Copy {
    type Proto: TryFrom<i32>;
    fn from_proto(p: Self::Proto) -> Option<Self>;
    fn to_proto(self) -> i32;
}

macro_rules! bridge {
    ($($name:ident { $($v:ident),+ $(,)? })+) => { $(
        impl Bridge for domain::$name {
            type Proto = pb::$name;
            fn from_proto(p: pb::$name) -> Option<Self> {
                match p {
                    pb::$name::Unspecified => None,
                    $(pb::$name::$v => Some(domain::$name::$v)),+
                }
            }
            fn to_proto(self) -> i32 {
                match self { $(domain::$name::$v => pb::$name::$v as i32),+ }
            }
        }
    )+ };
}

bridge! {
    Therapy { SsaOctreotide, SsaLanreotide, PrrtLu177Dotatate, PrrtY90, I131Mibg, CurativeSurgery, DebulkingSurgery,
              Chemotherapy, Radiotherapy, Sunitinib, Everolimus, LiverTae, LiverTace, Sirt }
    Nation { England, Wales }
    WelshRegion { North, SouthMid }
    Sex { Female, Male }
    WelshHealthBoard { AneurinBevan, BetsiCadwaladr, CardiffAndVale, CwmTafMorgannwg, HywelDda, Powys, SwanseaBay }
    SsaIndication { SymptomControl, TumourControl, SymptomAndTumourControl }
    PrimarySite { Pancreas, Stomach, Duodenum, JejunumIleum, Appendix, Colon, Rectum, Lung, Thymus, UnknownPrimary,
                  Paraganglioma, Phaeochromocytoma, MedullaryThyroid, Other }
    Differentiation { Well, Moderate, Poor }
    WhoGrade { G1, G2, G3, Nec, Minen }
    LungClassification { TypicalCarcinoid, AtypicalCarcinoid, LargeCellNec, SmallCellCarcinoma }
    GradingSystem { Who2010, Who2017, Who2019, Who2022 }
    FunctionalSyndrome { None, Carcinoid, Insulinoma, Gastrinoma, Vipoma, Glucagonoma, Other }
    Extent { Localised, Locoregional, LocallyAdvancedUnresectable, Metastatic }
    ExtrahepaticSite { None, LymphNodes, Bone, Lung, Peritoneum, Other }
    SstrImagingModality { Ga68DotaPet, Cu64DotaPet, In111Octreotide }
    BestResponse { Complete, Partial, Stable, Progression }
    MibgInterferingDrug { None, TricyclicAntidepressant, Sympathomimetic, CalciumChannelBlocker,
                          LabetalolOrLongActingBetaBlocker, Reserpine, Phenothiazine }
    ChildPugh { NotCirrhotic, A, B, C }
    MdtName { Local, SouthWalesNet, RoyalFreeNet, LiverpoolNet, Other }
}

/// The most entries a repeated enum field may hold.
pub const MAX_LIST_ENTRIES: usize = 16;
/// The most prior treatments a patient's record may list.
pub const MAX_PRIOR_TREATMENTS: usize = 100;

/// Reads proto values into domain values, collecting violations.
#[derive(Default)]
pub struct Reader {
    pub violations: Vec<Violation>,
}

/// The path of a field of the request's patient, as a constant.
macro_rules! at {
    ($field:literal) => {
        concat!("patient.", $field)
    };
}

impl Reader {
    pub fn violation(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.violations.push(Violation::new(field, description));
    }

    /// An enum field: unknown numbers are violations; `_UNSPECIFIED` is "not known".
    pub fn enumeration<D: Bridge>(&mut self, field: impl FieldName, raw: i32) -> Option<D> {
        match D::Proto::try_from(raw) {
            Ok(p) => D::from_proto(p),
            Err(_) => {
                self.violation(field.name(), format!("unknown enum value {raw}"));
                None
            }
        }
    }

    /// One entry of a repeated enum field: it must be a known, specified value.
    pub fn list_entry<D: Bridge>(&mut self, field: impl FieldName, raw: i32) -> Option<D> {
        match D::Proto::try_from(raw) {
            Ok(p) => {
                let value = D::from_proto(p);
                if value.is_none() {
                    self.violation(field.name(), "must not be _UNSPECIFIED");
                }
                value
            }
            Err(_) => {
                self.violation(field.name(), format!("unknown enum value {raw}"));
                None
            }
        }
    }

    /// A repeated enum field: every entry must be a known, specified value, and there are at
    /// most [`MAX_LIST_ENTRIES`] (no list the contract has can hold more distinct values).
    pub fn enumerations<D: Bridge>(&mut self, field: &str, raws: &[i32]) -> Vec<D> {
        if raws.len() > MAX_LIST_ENTRIES {
            self.violation(
                field,
                format!("at most {MAX_LIST_ENTRIES} entries, got {}", raws.len()),
            );
            return Vec::new();
        }
        raws.iter()
            .enumerate()
            .filter_map(|(i, raw)| self.list_entry(|| format!("{field}[{i}]"), *raw))
            .collect()
    }

    /// The prior treatments, or none and a violation when there are more than
    /// [`MAX_PRIOR_TREATMENTS`].
    fn prior_treatments<'p>(&mut self, list: &'p [pb::PriorTreatment]) -> &'p [pb::PriorTreatment] {
        if list.len() > MAX_PRIOR_TREATMENTS {
            self.violation(
                "patient.prior_treatments",
                format!(
                    "at most {MAX_PRIOR_TREATMENTS} prior treatments, got {}",
                    list.len()
                ),
            );
            return &[];
        }
        list
    }

    /// A full calendar date (year, month and day all set and valid).
    pub fn date(&mut self, field: impl FieldName, date: Option<&ProtoDate>) -> Option<NaiveDate> {
        let d = date?;
        let valid = u32::try_from(d.month)
            .ok()
            .zip(u32::try_from(d.day).ok())
            .and_then(|(m, day)| NaiveDate::from_ymd_opt(d.year, m, day))
            .filter(|_| (1..=9999).contains(&d.year));
        if valid.is_none() {
            self.violation(
                field.name(),
                format!(
                    "must be a full, valid date (got year {}, month {}, day {})",
                    d.year, d.month, d.day
                ),
            );
        }
        valid
    }

    fn text(&mut self, value: &str) -> Option<String> {
        if value.is_empty() {
            None
        } else {
            Some(value.to_string())
        }
    }

    /// The patient profile; range checks follow in [`Patient::validate`].
    pub fn patient(&mut self, p: &pb::PatientProfile) -> Patient {
        let demographics = p.demographics.unwrap_or_default();
        let tumour = p.tumour.unwrap_or_default();
        let extent = p.extent.clone().unwrap_or_default();
        let progression = p.progression.clone().unwrap_or_default();
        let imaging = p.imaging.unwrap_or_default();
        let medication = p.medication.clone().unwrap_or_default();
        let fitness = p.fitness.unwrap_or_default();
        let labs = p.labs.unwrap_or_default();
        let mdt = p.mdt.unwrap_or_default();
        Patient {
            demographics: domain::Demographics {
                nation: self.enumeration(at!("demographics.nation"), demographics.nation),
                welsh_region: self
                    .enumeration(at!("demographics.welsh_region"), demographics.welsh_region),
                date_of_birth: self.date(
                    at!("demographics.date_of_birth"),
                    demographics.date_of_birth.as_ref(),
                ),
                age_years: demographics.age_years,
                sex: self.enumeration(at!("demographics.sex"), demographics.sex),
                pregnant: demographics.pregnant,
                breastfeeding: demographics.breastfeeding,
                welsh_health_board: self.enumeration(
                    at!("demographics.welsh_health_board"),
                    demographics.welsh_health_board,
                ),
            },
            tumour: domain::Tumour {
                primary_site: self.enumeration(at!("tumour.primary_site"), tumour.primary_site),
                unknown_primary_gep_likely: tumour.unknown_primary_gep_likely,
                differentiation: self
                    .enumeration(at!("tumour.differentiation"), tumour.differentiation),
                who_grade: self.enumeration(at!("tumour.who_grade"), tumour.who_grade),
                lung_classification: self.enumeration(
                    at!("tumour.lung_classification"),
                    tumour.lung_classification,
                ),
                ki67_percent: tumour.ki67_percent,
                mitoses_per_2mm2: tumour.mitoses_per_2mm2,
                necrosis: tumour.necrosis,
                grading_system: self
                    .enumeration(at!("tumour.grading_system"), tumour.grading_system),
                functional_syndrome: self.enumeration(
                    at!("tumour.functional_syndrome"),
                    tumour.functional_syndrome,
                ),
                symptoms_controlled_on_ssa: tumour.symptoms_controlled_on_ssa,
                primary_tumour_size_mm: tumour.primary_tumour_size_mm,
            },
            extent: domain::DiseaseExtent {
                extent: self.enumeration(at!("extent.extent"), extent.extent),
                resectable_with_curative_intent: extent.resectable_with_curative_intent,
                resectability_mdt_date: self.date(
                    at!("extent.resectability_mdt_date"),
                    extent.resectability_mdt_date.as_ref(),
                ),
                liver_metastases: extent.liver_metastases,
                liver_burden_percent: extent.liver_burden_percent,
                liver_dominant: extent.liver_dominant,
                estimated_debulkable_percent: extent.estimated_debulkable_percent,
                bilobar_liver_disease: extent.bilobar_liver_disease,
                extrahepatic_sites: self
                    .enumerations(at!("extent.extrahepatic_sites"), &extent.extrahepatic_sites),
            },
            progression: domain::Progression {
                progressive: progression.progressive,
                baseline_scan_date: self.date(
                    at!("progression.baseline_scan_date"),
                    progression.baseline_scan_date.as_ref(),
                ),
                progression_scan_date: self.date(
                    at!("progression.progression_scan_date"),
                    progression.progression_scan_date.as_ref(),
                ),
                assessed_by: self.text(&progression.assessed_by),
                on_ssa_at_progression: progression.on_ssa_at_progression,
            },
            imaging: domain::Imaging {
                sstr_modality: self
                    .enumeration(at!("imaging.sstr_modality"), imaging.sstr_modality),
                sstr_scan_date: self.date(
                    at!("imaging.sstr_scan_date"),
                    imaging.sstr_scan_date.as_ref(),
                ),
                krenning_score: imaging.krenning_score,
                fdg_positive_sstr_negative_lesion: imaging.fdg_positive_sstr_negative_lesion,
                mibg_positive: imaging.mibg_positive,
                mibg_uptake_score: imaging.mibg_uptake_score,
                mibg_scan_date: self.date(
                    at!("imaging.mibg_scan_date"),
                    imaging.mibg_scan_date.as_ref(),
                ),
                sstr_positive: imaging.sstr_positive,
            },
            prior_treatments: self
                .prior_treatments(&p.prior_treatments)
                .iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    let field =
                        |f: &'static str| move || format!("patient.prior_treatments[{i}].{f}");
                    let therapy = self.enumeration(field("therapy"), t.therapy);
                    if therapy.is_none() && pb::Therapy::try_from(t.therapy).is_ok() {
                        self.violation(field("therapy")(), "is required");
                    }
                    let treatment = domain::PriorTreatment {
                        therapy: therapy?,
                        start_date: self.date(field("start_date"), t.start_date.as_ref()),
                        end_date: self.date(field("end_date"), t.end_date.as_ref()),
                        cycles: t.cycles,
                        cumulative_activity_gbq: t.cumulative_activity_gbq,
                        best_response: self.enumeration(field("best_response"), t.best_response),
                    };
                    Some(treatment)
                })
                .collect(),
            medication: domain::Medication {
                on_long_acting_ssa: medication.on_long_acting_ssa,
                ssa_last_dose_date: self.date(
                    at!("medication.ssa_last_dose_date"),
                    medication.ssa_last_dose_date.as_ref(),
                ),
                mibg_interfering_drugs: self.enumerations(
                    at!("medication.mibg_interfering_drugs"),
                    &medication.mibg_interfering_drugs,
                ),
                ssa_indication: self
                    .enumeration(at!("medication.ssa_indication"), medication.ssa_indication),
            },
            fitness: domain::Fitness {
                ecog_performance_status: fitness.ecog_performance_status,
                karnofsky_performance_status: fitness.karnofsky_performance_status,
                life_expectancy_months: fitness.life_expectancy_months,
                can_follow_radiation_precautions: fitness.can_follow_radiation_precautions,
                prior_marrow_radiotherapy_percent: fitness.prior_marrow_radiotherapy_percent,
                carcinoid_heart_disease: fitness.carcinoid_heart_disease,
                echocardiogram_date: self.date(
                    at!("fitness.echocardiogram_date"),
                    fitness.echocardiogram_date.as_ref(),
                ),
                uncontrolled_hypertension: fitness.uncontrolled_hypertension,
                lvef_percent: fitness.lvef_percent,
                qt_prolongation_risk: fitness.qt_prolongation_risk,
                child_pugh: self.enumeration(at!("fitness.child_pugh"), fitness.child_pugh),
                portal_vein_thrombosis: fitness.portal_vein_thrombosis,
                ascites: fitness.ascites,
                biliary_enteric_anastomosis: fitness.biliary_enteric_anastomosis,
                fit_for_surgery: fitness.fit_for_surgery,
            },
            labs: domain::LaboratoryResults {
                collected_date: self.date(at!("labs.collected_date"), labs.collected_date.as_ref()),
                haemoglobin_g_per_l: labs.haemoglobin_g_per_l,
                platelets_10e9_per_l: labs.platelets_10e9_per_l,
                white_cell_count_10e9_per_l: labs.white_cell_count_10e9_per_l,
                neutrophils_10e9_per_l: labs.neutrophils_10e9_per_l,
                creatinine_umol_per_l: labs.creatinine_umol_per_l,
                creatinine_clearance_ml_per_min: labs.creatinine_clearance_ml_per_min,
                egfr_ml_per_min_per_1_73m2: labs.egfr_ml_per_min_per_1_73m2,
                on_dialysis: labs.on_dialysis,
                bilirubin_umol_per_l: labs.bilirubin_umol_per_l,
                bilirubin_upper_limit_umol_per_l: labs.bilirubin_upper_limit_umol_per_l,
                albumin_g_per_l: labs.albumin_g_per_l,
                inr: labs.inr,
            },
            mdt: domain::MdtContext {
                discussed: mdt.discussed,
                mdt: self.enumeration(at!("mdt.mdt"), mdt.mdt),
                mdt_date: self.date(at!("mdt.mdt_date"), mdt.mdt_date.as_ref()),
                trial_or_registry_candidate: mdt.trial_or_registry_candidate,
            },
        }
    }
}

// ---- domain -> proto ----

pub fn date(d: NaiveDate) -> ProtoDate {
    ProtoDate {
        year: d.year(),
        month: d.month() as i32,
        day: d.day() as i32,
    }
}

fn period_dates(p: &Period) -> (Option<ProtoDate>, Option<ProtoDate>) {
    (p.from.map(date), p.to.map(date))
}

pub fn source(policy: &Policy, index: usize) -> pb::Source {
    let s = policy.source(index);
    pb::Source {
        id: s.id.clone(),
        document: s.document.clone(),
        section: s.section.clone(),
        published: s.published.map(date),
        url: s.url.clone(),
        evidence: match s.evidence {
            Evidence::Source => pb::EvidenceLevel::Source,
            Evidence::ServicePage => pb::EvidenceLevel::ServicePage,
            Evidence::ToVerify => pb::EvidenceLevel::ToVerify,
            Evidence::Secondary => pb::EvidenceLevel::Secondary,
            Evidence::ServiceFact => pb::EvidenceLevel::ServiceFact,
        } as i32,
    }
}

pub fn policy_reference(policy: &Policy) -> pb::PolicyReference {
    pb::PolicyReference {
        version: policy.version.clone(),
        content_hash: policy.content_hash.clone(),
        service_build: crate::SERVICE_BUILD.to_owned(),
    }
}

pub fn role(role: Role) -> pb::CriterionRole {
    match role {
        Role::Required => pb::CriterionRole::Required,
        Role::Contraindication => pb::CriterionRole::Contraindication,
        Role::Safety => pb::CriterionRole::Safety,
    }
}

pub fn severity(s: Severity) -> pb::SafetyFlagSeverity {
    match s {
        Severity::Info => pb::SafetyFlagSeverity::Info,
        Severity::Review => pb::SafetyFlagSeverity::Review,
        Severity::Withhold => pb::SafetyFlagSeverity::Withhold,
    }
}

pub fn route(r: FundingRoute) -> pb::FundingRoute {
    match r {
        FundingRoute::RoutinelyCommissionedNiceTa => pb::FundingRoute::RoutinelyCommissionedNiceTa,
        FundingRoute::PriorApprovalRequired => pb::FundingRoute::PriorApprovalRequired,
        FundingRoute::RoutinelyCommissioned => pb::FundingRoute::RoutinelyCommissioned,
        FundingRoute::WithinAuditRegistry => pb::FundingRoute::WithinAuditRegistry,
        FundingRoute::AuditRegistryClosed => pb::FundingRoute::AuditRegistryClosed,
        FundingRoute::IndividualFundingRequest => pb::FundingRoute::IndividualFundingRequest,
        FundingRoute::IndividualPatientFundingRequest => {
            pb::FundingRoute::IndividualPatientFundingRequest
        }
        FundingRoute::NotRoutinelyCommissioned => pb::FundingRoute::NotRoutinelyCommissioned,
        FundingRoute::Undetermined => pb::FundingRoute::Undetermined,
        FundingRoute::MdtDecision => pb::FundingRoute::MdtDecision,
        FundingRoute::Contraindicated => pb::FundingRoute::Contraindicated,
    }
}

pub fn prior_approval(p: PriorApproval) -> pb::PriorApprovalMechanism {
    match p {
        PriorApproval::None => pb::PriorApprovalMechanism::None,
        PriorApproval::Blueteq => pb::PriorApprovalMechanism::Blueteq,
        PriorApproval::IndividualRequest => pb::PriorApprovalMechanism::IndividualRequest,
        PriorApproval::RegistryAgreement => pb::PriorApprovalMechanism::RegistryAgreement,
    }
}

fn mdt(policy: &Policy, index: usize) -> Option<pb::Mdt> {
    policy.mdts.get(index).map(|m| pb::Mdt {
        id: m.id.clone(),
        name: m.name.clone(),
    })
}

fn paths(missing: &[&'static str]) -> Vec<String> {
    missing.iter().map(|m| (*m).to_string()).collect()
}

/// A number with its UCUM unit.
pub fn quantity(q: Quantity) -> pb::Quantity {
    pb::Quantity {
        value: q.value,
        unit: q.unit.to_owned(),
    }
}

fn limit((comparison, q): (Comparison, Quantity)) -> pb::Limit {
    pb::Limit {
        comparison: match comparison {
            Comparison::LessThan => pb::Comparison::LessThan,
            Comparison::AtMost => pb::Comparison::AtMost,
            Comparison::GreaterThan => pb::Comparison::GreaterThan,
            Comparison::AtLeast => pb::Comparison::AtLeast,
        } as i32,
        quantity: Some(quantity(q)),
    }
}

/// A criterion's result, its statement and source cited as the answer's style asks.
fn criterion(policy: &Policy, r: &CriterionReport, cites: &mut Citations) -> pb::CriterionResult {
    let c = &policy.criteria[r.criterion];
    let mut result = pb::CriterionResult {
        criterion_id: c.id.clone(),
        role: role(c.role) as i32,
        outcome: match r.finding.outcome {
            Outcome::Met => pb::CriterionOutcome::Met,
            Outcome::Unmet => pb::CriterionOutcome::Unmet,
            Outcome::Unknown => pb::CriterionOutcome::Unknown,
            Outcome::NotApplicable => pb::CriterionOutcome::NotApplicable,
        } as i32,
        values_used: r
            .finding
            .values
            .iter()
            .map(|(field, shown)| pb::PatientValue {
                field: (*field).to_string(),
                value: shown.text.to_string(),
                quantity: shown.quantity.map(quantity),
            })
            .collect(),
        missing_inputs: paths(&r.finding.missing),
        explanation: r.finding.explanation.to_string(),
        ..Default::default()
    };
    cites.statement(policy, r.criterion, &mut result);
    result
}

fn flag(policy: &Policy, f: &FlagReport, cites: &mut Citations) -> pb::SafetyFlag {
    let c = &policy.criteria[f.criterion];
    let measured = || {
        f.finding
            .values
            .first()
            .and_then(|(_, shown)| shown.quantity)
    };
    let (measured, limit) = match f.kind {
        FlagKind::ContraindicationNotRecorded => (None, None),
        FlagKind::UnverifiedCriterion | FlagKind::SafetyLimit => {
            (measured().map(quantity), c.check.limit().map(limit))
        }
    };
    let (message, field, value, threshold) = match f.kind {
        FlagKind::ContraindicationNotRecorded => (
            format!(
                "{}: not recorded. An absolute contraindication: exclude it before treatment.",
                c.description
            ),
            f.finding.missing.join(", "),
            "not recorded".to_string(),
            String::new(),
        ),
        FlagKind::UnverifiedCriterion => (
            format!(
                "'{}' rests on no document that says it as applied here (the source is tagged to verify): specialist review of this criterion.",
                c.description
            ),
            f.finding
                .values
                .first()
                .map(|(field, _)| (*field).to_string())
                .unwrap_or_default(),
            f.finding
                .values
                .first()
                .map(|(_, shown)| shown.text.to_string())
                .unwrap_or_default(),
            c.check.threshold_text(),
        ),
        FlagKind::SafetyLimit => {
            let (field, value) = f
                .finding
                .values
                .first()
                .map(|(field, shown)| ((*field).to_string(), shown.text.to_string()))
                .unwrap_or_default();
            (c.flag.clone(), field, value, c.check.threshold_text())
        }
    };
    let (source_id, source) = cites.source(policy, c.source);
    #[allow(deprecated)] // `source`: filled in the inline style only.
    pb::SafetyFlag {
        flag_id: c.id.clone(),
        severity: severity(f.severity) as i32,
        message,
        field,
        value,
        threshold,
        source,
        source_id,
        measured,
        limit,
    }
}

/// One therapy's eligibility for the wire: BASIC is the status alone; FULL adds the summary,
/// criteria, missing inputs, flags and deciding MDT (the facts behind a FULL answer are
/// explained).
pub fn eligibility(
    policy: &Policy,
    a: EligibilityAnswer,
    full: bool,
    cites: &mut Citations,
) -> pb::TherapyEligibility {
    let status = match a.status {
        Status::Eligible => pb::EligibilityStatus::Eligible,
        Status::NotEligible => pb::EligibilityStatus::NotEligible,
        Status::Indeterminate => pb::EligibilityStatus::Indeterminate,
        Status::Held => pb::EligibilityStatus::Held,
    };
    let mut out = pb::TherapyEligibility {
        therapy: a.therapy.to_proto(),
        status: status as i32,
        ..Default::default()
    };
    if full {
        out.summary = a.summary;
        out.criteria = a
            .criteria
            .iter()
            .map(|r| criterion(policy, r, cites))
            .collect();
        out.missing_inputs = paths(&a.missing);
        out.safety_flags = a.flags.iter().map(|f| flag(policy, f, cites)).collect();
        out.deciding_mdt = mdt(policy, a.mdt);
    }
    out
}

/// One therapy's funding for the wire: BASIC is the route, its rule, the nation and the route
/// to try if refused; FULL adds the summary, missing inputs, commissioner, prior approval,
/// deciding MDT, delivery sites, criteria, source and notes.
pub fn funding(
    policy: &Policy,
    a: FundingAnswer,
    full: bool,
    cites: &mut Citations,
) -> pb::TherapyFunding {
    let mut out = pb::TherapyFunding {
        therapy: a.therapy.to_proto(),
        route: route(a.route) as i32,
        nation: a
            .nation
            .map_or(pb::Nation::Unspecified as i32, |n| n.to_proto()),
        next_route_if_refused: a
            .next_if_refused
            .map_or(pb::FundingRoute::Unspecified, route) as i32,
        route_id: a.route_id.to_string(),
        ..Default::default()
    };
    if full {
        out.summary = a.summary.into_owned();
        out.missing_inputs = paths(&a.missing);
        out.commissioner = a.commissioner.map(|c| {
            let (source_id, source) = cites.source(policy, c.source);
            #[allow(deprecated)] // `source`: filled in the inline style only.
            pb::Commissioner {
                id: c.id.to_string(),
                name: c.name.into_owned(),
                source,
                source_id,
            }
        });
        out.prior_approval = a.prior_approval.map(|p| pb::PriorApproval {
            required: p != PriorApproval::None,
            mechanism: prior_approval(p) as i32,
            note: String::new(),
        });
        out.deciding_mdt = mdt(policy, a.mdt);
        out.delivery_sites = a
            .sites
            .iter()
            .map(|s| {
                let site = &policy.sites[s.site];
                let (effective_from, effective_to) = period_dates(&s.period);
                let (source_id, source) = cites.source(policy, s.source);
                #[allow(deprecated)] // `source`: filled in the inline style only.
                pb::DeliverySite {
                    id: site.id.clone(),
                    name: site.name.clone(),
                    effective_from,
                    effective_to,
                    note: s.note.to_string(),
                    source,
                    source_id,
                }
            })
            .collect();
        out.criteria = a
            .criteria
            .iter()
            .map(|r| criterion(policy, r, cites))
            .collect();
        if let Some(s) = a.source {
            let (source_id, source) = cites.source(policy, s);
            out.source_id = source_id;
            #[allow(deprecated)] // Filled in the inline style only.
            {
                out.source = source;
            }
        }
        out.notes = a.notes.into_iter().map(|n| n.into_owned()).collect();
    }
    out
}

pub fn derived(facts: &Facts) -> pb::DerivedFindings {
    let GradeAssessment {
        grade,
        basis,
        differentiation,
        differentiation_basis,
        ..
    } = &facts.grade;
    let gep = match facts.patient.tumour.primary_site {
        None => pb::GepClassification::Unspecified,
        Some(domain::PrimarySite::UnknownPrimary) => pb::GepClassification::UnknownPrimary,
        Some(site) if site.is_gep() => pb::GepClassification::Gep,
        Some(_) => pb::GepClassification::NonGep,
    };
    pb::DerivedFindings {
        who_grade: grade.map_or(pb::WhoGrade::Unspecified as i32, |g| g.to_proto()),
        grade_basis: basis.clone(),
        gep_classification: gep as i32,
        age_years: facts.age,
        differentiation: differentiation
            .map_or(pb::Differentiation::Unspecified as i32, |d| d.to_proto()),
        differentiation_basis: differentiation_basis.clone(),
    }
}

pub fn period(p: &Period) -> (Option<ProtoDate>, Option<ProtoDate>) {
    period_dates(p)
}
