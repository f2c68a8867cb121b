//! The patient as the engine sees it: typed, validated facts. An absent fact stays `None`
//! (never zero or false), so a criterion can answer UNKNOWN and name what is missing.
//!
//! The api layer builds a [`Patient`] from the proto message; policy example cases build one
//! from TOML. Both go through [`Patient::validate`], so one set of ranges guards both doors.

pub mod dates;
mod validate;

use chrono::NaiveDate;
use serde::Deserialize;

pub(crate) use validate::{FieldName, Violation};

/// Every fact the service may use (reference §13), grouped as the proto groups them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Patient {
    pub demographics: Demographics,
    pub tumour: Tumour,
    pub extent: DiseaseExtent,
    pub(crate) progression: Progression,
    pub imaging: Imaging,
    pub prior_treatments: Vec<PriorTreatment>,
    pub(crate) medication: Medication,
    pub(crate) fitness: Fitness,
    pub labs: LaboratoryResults,
    pub(crate) mdt: MdtContext,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Demographics {
    pub nation: Option<Nation>,
    pub welsh_region: Option<WelshRegion>,
    #[serde(deserialize_with = "dates::optional")]
    pub date_of_birth: Option<NaiveDate>,
    pub age_years: Option<i32>,
    pub sex: Option<Sex>,
    pub pregnant: Option<bool>,
    pub breastfeeding: Option<bool>,
    pub welsh_health_board: Option<WelshHealthBoard>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tumour {
    pub primary_site: Option<PrimarySite>,
    pub unknown_primary_gep_likely: Option<bool>,
    pub differentiation: Option<Differentiation>,
    pub who_grade: Option<WhoGrade>,
    pub lung_classification: Option<LungClassification>,
    pub ki67_percent: Option<f64>,
    pub mitoses_per_2mm2: Option<f64>,
    pub necrosis: Option<bool>,
    pub grading_system: Option<GradingSystem>,
    pub functional_syndrome: Option<FunctionalSyndrome>,
    pub symptoms_controlled_on_ssa: Option<bool>,
    pub primary_tumour_size_mm: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiseaseExtent {
    pub extent: Option<Extent>,
    pub resectable_with_curative_intent: Option<bool>,
    #[serde(deserialize_with = "dates::optional")]
    pub resectability_mdt_date: Option<NaiveDate>,
    pub liver_metastases: Option<bool>,
    pub liver_burden_percent: Option<f64>,
    pub liver_dominant: Option<bool>,
    pub bilobar_liver_disease: Option<bool>,
    pub extrahepatic_sites: Vec<ExtrahepaticSite>,
    pub estimated_debulkable_percent: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Progression {
    pub progressive: Option<bool>,
    #[serde(deserialize_with = "dates::optional")]
    pub baseline_scan_date: Option<NaiveDate>,
    #[serde(deserialize_with = "dates::optional")]
    pub progression_scan_date: Option<NaiveDate>,
    pub assessed_by: Option<String>,
    pub on_ssa_at_progression: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Imaging {
    pub sstr_modality: Option<SstrImagingModality>,
    #[serde(deserialize_with = "dates::optional")]
    pub sstr_scan_date: Option<NaiveDate>,
    pub krenning_score: Option<i32>,
    pub fdg_positive_sstr_negative_lesion: Option<bool>,
    pub mibg_positive: Option<bool>,
    pub mibg_uptake_score: Option<i32>,
    #[serde(deserialize_with = "dates::optional")]
    pub mibg_scan_date: Option<NaiveDate>,
    pub sstr_positive: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorTreatment {
    pub therapy: Therapy,
    #[serde(default, deserialize_with = "dates::optional")]
    pub start_date: Option<NaiveDate>,
    #[serde(default, deserialize_with = "dates::optional")]
    pub end_date: Option<NaiveDate>,
    #[serde(default)]
    pub cycles: Option<i32>,
    #[serde(default)]
    pub cumulative_activity_gbq: Option<f64>,
    #[serde(default)]
    pub best_response: Option<BestResponse>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Medication {
    pub on_long_acting_ssa: Option<bool>,
    #[serde(deserialize_with = "dates::optional")]
    pub ssa_last_dose_date: Option<NaiveDate>,
    pub mibg_interfering_drugs: Vec<MibgInterferingDrug>,
    pub ssa_indication: Option<SsaIndication>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Fitness {
    pub ecog_performance_status: Option<i32>,
    pub karnofsky_performance_status: Option<i32>,
    pub life_expectancy_months: Option<i32>,
    pub can_follow_radiation_precautions: Option<bool>,
    pub prior_marrow_radiotherapy_percent: Option<f64>,
    pub carcinoid_heart_disease: Option<bool>,
    #[serde(deserialize_with = "dates::optional")]
    pub echocardiogram_date: Option<NaiveDate>,
    pub uncontrolled_hypertension: Option<bool>,
    pub lvef_percent: Option<f64>,
    pub qt_prolongation_risk: Option<bool>,
    pub child_pugh: Option<ChildPugh>,
    pub portal_vein_thrombosis: Option<bool>,
    pub ascites: Option<bool>,
    pub biliary_enteric_anastomosis: Option<bool>,
    pub fit_for_surgery: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LaboratoryResults {
    #[serde(deserialize_with = "dates::optional")]
    pub collected_date: Option<NaiveDate>,
    pub haemoglobin_g_per_l: Option<f64>,
    pub platelets_10e9_per_l: Option<f64>,
    pub white_cell_count_10e9_per_l: Option<f64>,
    pub neutrophils_10e9_per_l: Option<f64>,
    pub creatinine_umol_per_l: Option<f64>,
    pub creatinine_clearance_ml_per_min: Option<f64>,
    pub egfr_ml_per_min_per_1_73m2: Option<f64>,
    pub on_dialysis: Option<bool>,
    pub bilirubin_umol_per_l: Option<f64>,
    pub bilirubin_upper_limit_umol_per_l: Option<f64>,
    pub albumin_g_per_l: Option<f64>,
    pub inr: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct MdtContext {
    pub discussed: Option<bool>,
    pub mdt: Option<MdtName>,
    #[serde(deserialize_with = "dates::optional")]
    pub mdt_date: Option<NaiveDate>,
    pub trial_or_registry_candidate: Option<bool>,
}

/// Declares a clinical vocabulary: a Rust enum whose policy-file spelling is snake_case,
/// with a human label for answers.
macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// How the value reads in an answer.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.label())
            }
        }
    };
}

vocabulary!(
    /// The therapies the service covers (clinical README, position 8).
    Therapy {
        SsaOctreotide => "somatostatin analogue: octreotide",
        SsaLanreotide => "somatostatin analogue: lanreotide",
        PrrtLu177Dotatate => "PRRT: lutetium-177 DOTATATE",
        PrrtY90 => "PRRT: yttrium-90 DOTATOC/DOTATATE",
        I131Mibg => "I-131 mIBG therapy",
        CurativeSurgery => "curative surgery",
        DebulkingSurgery => "debulking surgery",
        Chemotherapy => "chemotherapy",
        Radiotherapy => "radiotherapy",
        Sunitinib => "sunitinib",
        Everolimus => "everolimus",
        LiverTae => "liver embolisation (TAE)",
        LiverTace => "liver chemoembolisation (TACE)",
        Sirt => "SIRT",
    }
);

vocabulary!(Nation { England => "England", Wales => "Wales" });
vocabulary!(WelshRegion { North => "North Wales", SouthMid => "South and Mid Wales" });
vocabulary!(Sex { Female => "female", Male => "male" });

vocabulary!(
    /// The seven NHS Wales local health boards.
    WelshHealthBoard {
        AneurinBevan => "Aneurin Bevan University Health Board",
        BetsiCadwaladr => "Betsi Cadwaladr University Health Board",
        CardiffAndVale => "Cardiff and Vale University Health Board",
        CwmTafMorgannwg => "Cwm Taf Morgannwg University Health Board",
        HywelDda => "Hywel Dda University Health Board",
        Powys => "Powys Teaching Health Board",
        SwanseaBay => "Swansea Bay University Health Board",
    }
);

impl WelshHealthBoard {
    /// The referral region the board's patients belong to: Betsi Cadwaladr serves North Wales
    /// (Liverpool centre), the others South and Mid Wales (reference §1 Wales).
    pub fn region(self) -> WelshRegion {
        match self {
            WelshHealthBoard::BetsiCadwaladr => WelshRegion::North,
            _ => WelshRegion::SouthMid,
        }
    }
}

vocabulary!(
    /// What a somatostatin analogue is asked for (reference §2).
    SsaIndication {
        SymptomControl => "symptom control",
        TumourControl => "tumour growth control",
        SymptomAndTumourControl => "symptom and tumour growth control",
    }
);

vocabulary!(
    /// Where the tumour arose.
    PrimarySite {
        Pancreas => "pancreas",
        Stomach => "stomach",
        Duodenum => "duodenum",
        JejunumIleum => "small bowel (jejunum/ileum)",
        Appendix => "appendix",
        Colon => "colon",
        Rectum => "rectum",
        Lung => "lung (bronchial)",
        Thymus => "thymus",
        UnknownPrimary => "unknown primary",
        Paraganglioma => "paraganglioma",
        Phaeochromocytoma => "phaeochromocytoma",
        MedullaryThyroid => "medullary thyroid cancer",
        Other => "other site",
    }
);

impl PrimarySite {
    /// Lung and thymic NETs are classified as typical/atypical carcinoid (reference §0.2).
    pub fn uses_lung_classification(self) -> bool {
        matches!(self, PrimarySite::Lung | PrimarySite::Thymus)
    }

    /// Whether a WHO grade means anything for this site: the digestive grades, and the lung
    /// classification mapped to G1/G2 (reference §0.2). Phaeochromocytoma, paraganglioma and
    /// medullary thyroid cancer have neither (clinical README, position 6).
    pub fn has_who_grade(self) -> bool {
        !matches!(
            self,
            PrimarySite::Paraganglioma
                | PrimarySite::Phaeochromocytoma
                | PrimarySite::MedullaryThyroid
        )
    }

    /// Gastroenteropancreatic: the pancreas and the gastrointestinal tract.
    pub fn is_gep(self) -> bool {
        matches!(
            self,
            PrimarySite::Pancreas
                | PrimarySite::Stomach
                | PrimarySite::Duodenum
                | PrimarySite::JejunumIleum
                | PrimarySite::Appendix
                | PrimarySite::Colon
                | PrimarySite::Rectum
        )
    }
}

vocabulary!(Differentiation { Well => "well differentiated", Moderate => "moderately differentiated", Poor => "poorly differentiated" });

vocabulary!(
    /// WHO grade, ordered from lowest to highest so that "the higher grade wins" is `max`.
    WhoGrade { G1 => "G1", G2 => "G2", G3 => "G3", Nec => "NEC", Minen => "MiNEN" }
);

vocabulary!(LungClassification {
    TypicalCarcinoid => "typical carcinoid",
    AtypicalCarcinoid => "atypical carcinoid",
    LargeCellNec => "large-cell neuroendocrine carcinoma",
    SmallCellCarcinoma => "small-cell carcinoma",
});

vocabulary!(GradingSystem { Who2010 => "WHO 2010", Who2017 => "WHO 2017", Who2019 => "WHO 2019", Who2022 => "WHO 2022" });

vocabulary!(FunctionalSyndrome {
    None => "non-functional",
    Carcinoid => "carcinoid syndrome",
    Insulinoma => "insulinoma",
    Gastrinoma => "gastrinoma",
    Vipoma => "VIPoma",
    Glucagonoma => "glucagonoma",
    Other => "other hormonal syndrome",
});

vocabulary!(Extent {
    Localised => "localised",
    Locoregional => "locoregional",
    LocallyAdvancedUnresectable => "locally advanced, unresectable",
    Metastatic => "metastatic",
});

vocabulary!(ExtrahepaticSite {
    None => "none",
    LymphNodes => "lymph nodes",
    Bone => "bone",
    Lung => "lung",
    Peritoneum => "peritoneum",
    Other => "other",
});

vocabulary!(SstrImagingModality {
    Ga68DotaPet => "Ga-68 DOTA-peptide PET",
    Cu64DotaPet => "Cu-64 DOTA-peptide PET",
    In111Octreotide => "In-111 octreotide scintigraphy",
});

vocabulary!(BestResponse { Complete => "complete response", Partial => "partial response", Stable => "stable disease", Progression => "progressive disease" });

vocabulary!(MibgInterferingDrug {
    None => "none",
    TricyclicAntidepressant => "tricyclic antidepressant",
    Sympathomimetic => "sympathomimetic",
    CalciumChannelBlocker => "calcium-channel blocker",
    LabetalolOrLongActingBetaBlocker => "labetalol or long-acting beta-blocker",
    Reserpine => "reserpine",
    Phenothiazine => "phenothiazine",
});

vocabulary!(ChildPugh { NotCirrhotic => "no cirrhosis", A => "Child-Pugh A", B => "Child-Pugh B", C => "Child-Pugh C" });

vocabulary!(MdtName {
    Local => "local MDT",
    SouthWalesNet => "South Wales NET MDT",
    RoyalFreeNet => "Royal Free NET MDT",
    LiverpoolNet => "Liverpool NET MDT",
    Other => "other MDT",
});

impl Patient {
    /// Age in whole years on `on`: from the date of birth when given, else the stated age.
    pub fn age_on(&self, on: NaiveDate) -> Option<i32> {
        match self.demographics.date_of_birth {
            Some(dob) => Some(dates::whole_years_between(dob, on)),
            None => self.demographics.age_years,
        }
    }

    /// The Welsh referral region: as recorded, or from the health board.
    pub fn welsh_region(&self) -> Option<WelshRegion> {
        self.demographics
            .welsh_region
            .or_else(|| self.demographics.welsh_health_board.map(|b| b.region()))
    }

    /// Whether a WHO grade applies to the tumour; `true` while the site is not recorded.
    pub fn has_who_grade(&self) -> bool {
        self.tumour.primary_site.is_none_or(|s| s.has_who_grade())
    }
}
