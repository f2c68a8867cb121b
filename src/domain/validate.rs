//! Range and consistency checks on a [`Patient`]. Every violation is collected; nothing is
//! clamped. Ranges are the accepted input ranges of reference §13, not normal ranges.

use super::*;

/// One invalid field: its path (proto snake_case, relative to the patient) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    pub field: String,
    pub description: String,
}

impl Violation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Violation {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// A field's path, spelled out only when there is a violation to name: most requests have
/// none, and building every path up front cost a twentieth of a screened patient's time.
pub(crate) trait FieldName {
    fn name(&self) -> String;
}

impl FieldName for &str {
    fn name(&self) -> String {
        (*self).to_owned()
    }
}

impl<F: Fn() -> String> FieldName for F {
    fn name(&self) -> String {
        self()
    }
}

struct Checker {
    today: NaiveDate,
    date_of_birth: Option<NaiveDate>,
    violations: Vec<Violation>,
}

impl Checker {
    fn push(&mut self, field: impl FieldName, description: String) {
        self.violations
            .push(Violation::new(field.name(), description));
    }

    fn number(
        &mut self,
        field: impl FieldName,
        value: Option<f64>,
        min: f64,
        max: f64,
        unit: &str,
    ) {
        if let Some(v) = value {
            if !v.is_finite() {
                self.push(field, "must be a finite number".into());
            } else if v < min || v > max {
                self.push(
                    field,
                    format!("must be between {min} and {max}{unit}, got {v}"),
                );
            }
        }
    }

    fn integer(&mut self, field: impl FieldName, value: Option<i32>, min: i32, max: i32) {
        if let Some(v) = value
            && (v < min || v > max)
        {
            self.push(field, format!("must be between {min} and {max}, got {v}"));
        }
    }

    /// A clinical event date: not after today, not before birth.
    fn event_date(&mut self, field: impl FieldName + Copy, value: Option<NaiveDate>) {
        let Some(date) = value else { return };
        if date > self.today {
            self.push(
                field,
                format!("{date} is in the future (today is {})", self.today),
            );
        } else if let Some(dob) = self.date_of_birth
            && date < dob
        {
            self.push(field, format!("{date} is before the date of birth {dob}"));
        }
    }

    fn not_before(
        &mut self,
        field: impl FieldName,
        later: Option<NaiveDate>,
        earlier: Option<NaiveDate>,
        what: &str,
    ) {
        if let (Some(l), Some(e)) = (later, earlier)
            && l < e
        {
            self.push(field, format!("{l} is before the {what} {e}"));
        }
    }

    /// A "none" marker in a list must stand alone.
    fn none_alone<T: PartialEq + Copy>(
        &mut self,
        field: impl FieldName + Copy,
        values: &[T],
        none: T,
    ) {
        if values.contains(&none) && values.len() > 1 {
            self.push(field, "NONE cannot be combined with other values".into());
        }
        let mut seen: Vec<T> = Vec::with_capacity(values.len());
        for v in values {
            if seen.contains(v) {
                self.push(field, "lists a value more than once".into());
                return;
            }
            seen.push(*v);
        }
    }
}

impl Patient {
    /// Checks ranges and consistency on `today`; `as_of` is the evaluation date (an age may
    /// be stated as of either). Returns every violation, paths relative to the patient.
    pub(crate) fn validate(&self, today: NaiveDate, as_of: NaiveDate) -> Vec<Violation> {
        let mut c = Checker {
            today,
            date_of_birth: self.demographics.date_of_birth,
            violations: Vec::new(),
        };
        demographics(&mut c, &self.demographics, as_of);
        tumour(&mut c, &self.tumour);
        extent(&mut c, &self.extent);
        progression(&mut c, &self.progression);
        imaging(&mut c, &self.imaging);
        prior_treatments(&mut c, &self.prior_treatments);
        medication(&mut c, &self.medication);
        fitness(&mut c, &self.fitness);
        labs(&mut c, &self.labs);
        c.event_date("mdt.mdt_date", self.mdt.mdt_date);
        c.violations
    }
}

/// The demographics: a date of birth not in the future, an age that agrees with it, Welsh
/// region and health board only for Wales and agreeing with each other, and neither pregnancy
/// nor breastfeeding for a male patient.
fn demographics(c: &mut Checker, d: &Demographics, as_of: NaiveDate) {
    let today = c.today;
    if let Some(dob) = d.date_of_birth
        && dob > today
    {
        c.push(
            "demographics.date_of_birth",
            format!("{dob} is in the future (today is {today})"),
        );
    }
    c.integer("demographics.age_years", d.age_years, 0, 120);
    if let (Some(dob), Some(age)) = (d.date_of_birth, d.age_years) {
        let by_today = dates::whole_years_between(dob, today);
        let by_as_of = dates::whole_years_between(dob, as_of);
        if age != by_today && age != by_as_of {
            c.push(
                "demographics.age_years",
                format!("{age} disagrees with date_of_birth {dob} (age {by_today} today)"),
            );
        }
    }
    if d.welsh_region.is_some() && d.nation == Some(Nation::England) {
        c.push(
            "demographics.welsh_region",
            "is only for patients in Wales".into(),
        );
    }
    if let Some(board) = d.welsh_health_board {
        if d.nation == Some(Nation::England) {
            c.push(
                "demographics.welsh_health_board",
                "is only for patients in Wales".into(),
            );
        }
        if let Some(region) = d.welsh_region
            && region != board.region()
        {
            c.push(
                "demographics.welsh_health_board",
                format!("{board} is in {}, not {region}", board.region()),
            );
        }
    }
    if d.sex == Some(Sex::Male) {
        for (field, value) in [
            ("demographics.pregnant", d.pregnant),
            ("demographics.breastfeeding", d.breastfeeding),
        ] {
            if value == Some(true) {
                c.push(field, "cannot be true when sex is SEX_MALE".into());
            }
        }
    }
}

/// The tumour: measures in range, fields that belong to one kind of primary only with it.
fn tumour(c: &mut Checker, t: &Tumour) {
    c.number("tumour.ki67_percent", t.ki67_percent, 0.0, 100.0, " %");
    c.number(
        "tumour.primary_tumour_size_mm",
        t.primary_tumour_size_mm,
        0.0,
        300.0,
        " mm",
    );
    c.number(
        "tumour.mitoses_per_2mm2",
        t.mitoses_per_2mm2,
        0.0,
        500.0,
        " per 2 mm²",
    );
    if t.unknown_primary_gep_likely.is_some() && t.primary_site != Some(PrimarySite::UnknownPrimary)
    {
        c.push(
            "tumour.unknown_primary_gep_likely",
            "is only for primary_site PRIMARY_SITE_UNKNOWN_PRIMARY".into(),
        );
    }
    if t.lung_classification.is_some()
        && let Some(site) = t.primary_site
        && !site.uses_lung_classification()
    {
        c.push(
            "tumour.lung_classification",
            format!("is only for lung or thymic primaries, not {site}"),
        );
    }
}

/// The extent of disease: the resectability date, liver burden, and "none" standing alone
/// among extrahepatic sites.
fn extent(c: &mut Checker, e: &DiseaseExtent) {
    c.event_date("extent.resectability_mdt_date", e.resectability_mdt_date);
    c.number(
        "extent.liver_burden_percent",
        e.liver_burden_percent,
        0.0,
        100.0,
        " %",
    );
    c.none_alone(
        "extent.extrahepatic_sites",
        &e.extrahepatic_sites,
        ExtrahepaticSite::None,
    );
}

/// Progression: scan dates in order.
fn progression(c: &mut Checker, p: &Progression) {
    c.event_date("progression.baseline_scan_date", p.baseline_scan_date);
    c.event_date("progression.progression_scan_date", p.progression_scan_date);
    c.not_before(
        "progression.progression_scan_date",
        p.progression_scan_date,
        p.baseline_scan_date,
        "baseline scan",
    );
    if let Some(who) = &p.assessed_by
        && who.chars().count() > 200
    {
        c.push(
            "progression.assessed_by",
            "must be at most 200 characters".into(),
        );
    }
}

/// Imaging: dates and uptake scores on their scales.
fn imaging(c: &mut Checker, i: &Imaging) {
    c.event_date("imaging.sstr_scan_date", i.sstr_scan_date);
    c.integer("imaging.krenning_score", i.krenning_score, 0, 4);
    c.integer("imaging.mibg_uptake_score", i.mibg_uptake_score, 0, 4);
    c.event_date("imaging.mibg_scan_date", i.mibg_scan_date);
}

/// Prior treatments: dates in order, counts and activity in range.
fn prior_treatments(c: &mut Checker, treatments: &[PriorTreatment]) {
    for (n, treatment) in treatments.iter().enumerate() {
        let at = |f: &'static str| move || format!("prior_treatments[{n}].{f}");
        c.event_date(at("start_date"), treatment.start_date);
        c.event_date(at("end_date"), treatment.end_date);
        c.not_before(
            at("end_date"),
            treatment.end_date,
            treatment.start_date,
            "start date",
        );
        c.integer(at("cycles"), treatment.cycles, 0, 100);
        c.number(
            at("cumulative_activity_gbq"),
            treatment.cumulative_activity_gbq,
            0.0,
            60.0,
            " GBq",
        );
    }
}

/// Medication: the last SSA dose date, and "none" standing alone among the medicines that
/// interfere with mIBG.
fn medication(c: &mut Checker, m: &Medication) {
    c.event_date("medication.ssa_last_dose_date", m.ssa_last_dose_date);
    c.none_alone(
        "medication.mibg_interfering_drugs",
        &m.mibg_interfering_drugs,
        MibgInterferingDrug::None,
    );
}

/// Fitness: performance scores on their scales (Karnofsky in tens), and the rest in range.
fn fitness(c: &mut Checker, f: &Fitness) {
    c.integer(
        "fitness.ecog_performance_status",
        f.ecog_performance_status,
        0,
        4,
    );
    c.integer(
        "fitness.karnofsky_performance_status",
        f.karnofsky_performance_status,
        0,
        100,
    );
    if let Some(k) = f.karnofsky_performance_status
        && (0..=100).contains(&k)
        && k % 10 != 0
    {
        c.push(
            "fitness.karnofsky_performance_status",
            format!("must be a multiple of 10, got {k}"),
        );
    }
    c.integer(
        "fitness.life_expectancy_months",
        f.life_expectancy_months,
        0,
        600,
    );
    c.number(
        "fitness.prior_marrow_radiotherapy_percent",
        f.prior_marrow_radiotherapy_percent,
        0.0,
        100.0,
        " %",
    );
    c.event_date("fitness.echocardiogram_date", f.echocardiogram_date);
    c.number("fitness.lvef_percent", f.lvef_percent, 5.0, 90.0, " %");
}

/// Laboratory results, each within the range its field allows.
fn labs(c: &mut Checker, l: &LaboratoryResults) {
    c.event_date("labs.collected_date", l.collected_date);
    c.number(
        "labs.haemoglobin_g_per_l",
        l.haemoglobin_g_per_l,
        30.0,
        250.0,
        " g/L",
    );
    c.number(
        "labs.platelets_10e9_per_l",
        l.platelets_10e9_per_l,
        0.0,
        2000.0,
        " x10^9/L",
    );
    c.number(
        "labs.white_cell_count_10e9_per_l",
        l.white_cell_count_10e9_per_l,
        0.0,
        200.0,
        " x10^9/L",
    );
    c.number(
        "labs.neutrophils_10e9_per_l",
        l.neutrophils_10e9_per_l,
        0.0,
        100.0,
        " x10^9/L",
    );
    c.number(
        "labs.creatinine_umol_per_l",
        l.creatinine_umol_per_l,
        10.0,
        2000.0,
        " µmol/L",
    );
    c.number(
        "labs.creatinine_clearance_ml_per_min",
        l.creatinine_clearance_ml_per_min,
        0.0,
        250.0,
        " mL/min",
    );
    c.number(
        "labs.egfr_ml_per_min_per_1_73m2",
        l.egfr_ml_per_min_per_1_73m2,
        0.0,
        250.0,
        " mL/min/1.73 m²",
    );
    c.number(
        "labs.bilirubin_umol_per_l",
        l.bilirubin_umol_per_l,
        0.0,
        1000.0,
        " µmol/L",
    );
    c.number(
        "labs.bilirubin_upper_limit_umol_per_l",
        l.bilirubin_upper_limit_umol_per_l,
        1.0,
        100.0,
        " µmol/L",
    );
    c.number("labs.albumin_g_per_l", l.albumin_g_per_l, 5.0, 70.0, " g/L");
    c.number("labs.inr", l.inr, 0.5, 15.0, "");
}
