//! Eligibility and funding decisions: the active policy applied to one patient on one date.

use chrono::NaiveDate;

use super::criteria::{Facts, Finding, Outcome};
use super::policy::{
    FundingRoute, Period, Policy, PriorApproval, RegistryStatus, Role, Selector, Severity, Status,
};
use crate::domain::{Nation, Patient, Therapy};

/// A criterion and what it found.
#[derive(Debug, Clone)]
pub struct CriterionReport {
    pub criterion: usize,
    pub finding: std::sync::Arc<Finding>,
}

/// A safety finding for specialist review.
#[derive(Debug, Clone)]
pub struct FlagReport {
    pub criterion: usize,
    pub severity: Severity,
    pub message: String,
    pub field: String,
    pub value: String,
    pub threshold: String,
}

/// The MDT that decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdtRef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct EligibilityAnswer {
    pub therapy: Therapy,
    pub status: Status,
    pub summary: String,
    pub criteria: Vec<CriterionReport>,
    pub missing: Vec<String>,
    pub flags: Vec<FlagReport>,
    pub mdt: MdtRef,
}

#[derive(Debug, Clone)]
pub struct CommissionerOnDate {
    pub id: String,
    pub name: String,
    pub source: usize,
}

#[derive(Debug, Clone)]
pub struct SiteOnDate {
    pub site: usize,
    pub period: Period,
    pub note: String,
    pub source: usize,
}

#[derive(Debug, Clone)]
pub struct FundingAnswer {
    pub therapy: Therapy,
    pub route: FundingRoute,
    pub summary: String,
    pub nation: Option<Nation>,
    pub commissioner: Option<CommissionerOnDate>,
    pub prior_approval: Option<PriorApproval>,
    pub mdt: MdtRef,
    pub sites: Vec<SiteOnDate>,
    pub criteria: Vec<CriterionReport>,
    pub source: Option<usize>,
    pub next_if_refused: Option<FundingRoute>,
    pub missing: Vec<String>,
    pub route_id: String,
    pub notes: Vec<String>,
}

/// Adds `items` to `into`, keeping first-seen order and no repeats.
fn merge(into: &mut Vec<String>, items: &[String]) {
    for item in items {
        if !into.contains(item) {
            into.push(item.clone());
        }
    }
}

/// All MET, some UNMET, or undecided (with the reports of the unknown ones).
enum Conjunction {
    AllMet,
    SomeUnmet,
    Undecided(Vec<String>),
}

impl Policy {
    /// Derives what every criterion may need, once per patient and date.
    pub fn facts<'a>(&self, patient: &'a Patient, as_of: NaiveDate) -> Facts<'a> {
        Facts {
            patient,
            as_of,
            age: patient.age_on(as_of),
            grade: self.grading.assess(patient),
            registry_enrolments: Vec::new(),
            findings: (0..self.criteria.len())
                .map(|_| std::sync::OnceLock::new())
                .collect(),
        }
    }

    /// Evaluates one criterion (composites evaluate their members), once per patient and date.
    pub fn finding(&self, criterion: usize, facts: &Facts) -> std::sync::Arc<Finding> {
        let evaluate = || {
            std::sync::Arc::new(self.criteria[criterion].check.evaluate(facts, &|member| {
                Finding::clone(&self.finding(member, facts))
            }))
        };
        match facts.findings.get(criterion) {
            Some(cell) => std::sync::Arc::clone(cell.get_or_init(evaluate)),
            None => evaluate(),
        }
    }

    fn report(&self, criterion: usize, facts: &Facts) -> CriterionReport {
        CriterionReport {
            criterion,
            finding: self.finding(criterion, facts),
        }
    }

    fn conjunction(
        &self,
        when: &[usize],
        facts: &Facts,
        reports: &mut Vec<CriterionReport>,
    ) -> Conjunction {
        let mut missing = Vec::new();
        let mut unmet = false;
        for &c in when {
            let report = self.report(c, facts);
            match report.finding.outcome {
                Outcome::Met => {}
                Outcome::Unmet => unmet = true,
                Outcome::Unknown => merge(&mut missing, &report.finding.missing),
            }
            if !reports.iter().any(|r| r.criterion == c) {
                reports.push(report);
            }
        }
        if unmet {
            Conjunction::SomeUnmet
        } else if missing.is_empty() {
            Conjunction::AllMet
        } else {
            Conjunction::Undecided(missing)
        }
    }

    /// The first selector whose criteria are all MET; unknown ones are passed over.
    fn select(&self, selectors: &[Selector], facts: &Facts) -> Option<usize> {
        selectors
            .iter()
            .find(|s| {
                matches!(
                    self.conjunction(&s.when, facts, &mut Vec::new()),
                    Conjunction::AllMet
                )
            })
            .map(|s| s.target)
    }

    fn mdt_ref(&self, index: usize) -> MdtRef {
        let m = &self.mdts[index];
        MdtRef {
            id: m.id.clone(),
            name: m.name.clone(),
        }
    }

    /// The deciding MDT: the therapy's own rule, else the geographic rule, else the fallback.
    fn deciding_mdt(&self, therapy: Therapy, facts: &Facts) -> MdtRef {
        let own = self
            .therapies
            .get(&therapy)
            .and_then(|t| self.select(&t.mdt, facts));
        self.mdt_ref(
            own.or_else(|| self.select(&self.mdt_rules, facts))
                .unwrap_or(self.fallback_mdt),
        )
    }

    fn not_decided(&self, therapy: Therapy) -> String {
        format!(
            "Policy {} does not yet decide {therapy}: no answer is given rather than a guess; the MDT decides.",
            self.version
        )
    }

    /// Can the patient be considered for `therapy`? (clinical README, positions 1-3)
    pub fn eligibility(&self, facts: &Facts, therapy: Therapy) -> EligibilityAnswer {
        let mdt = self.deciding_mdt(therapy, facts);
        let Some(rules) = self.therapies.get(&therapy) else {
            return EligibilityAnswer {
                therapy,
                status: Status::Indeterminate,
                summary: self.not_decided(therapy),
                criteria: Vec::new(),
                missing: Vec::new(),
                flags: Vec::new(),
                mdt,
            };
        };
        let mut criteria = Vec::with_capacity(rules.eligibility.len());
        let mut missing = Vec::new();
        let mut unmet = Vec::new();
        let mut contraindicated = Vec::new();
        let mut flags = Vec::new();
        for &c in &rules.eligibility {
            let report = self.report(c, facts);
            let criterion = &self.criteria[c];
            let f = &report.finding;
            match (criterion.role, f.outcome) {
                (Role::Required, Outcome::Unmet) => unmet.push(format!("{} ({})", criterion.description, f.explanation)),
                (Role::Required, Outcome::Unknown) => merge(&mut missing, &f.missing),
                (Role::Contraindication, Outcome::Met) => {
                    contraindicated.push(format!("{} ({})", criterion.description, f.explanation))
                }
                (Role::Contraindication, Outcome::Unknown) => flags.push(FlagReport {
                    criterion: c,
                    severity: Severity::Review,
                    message: format!("{}: not recorded. An absolute contraindication: exclude it before treatment.", criterion.description),
                    field: f.missing.join(", "),
                    value: "not recorded".into(),
                    threshold: String::new(),
                }),
                (Role::Safety, Outcome::Met) => {
                    let (field, value) = f.values.first().cloned().unwrap_or_default();
                    flags.push(FlagReport {
                        criterion: c,
                        severity: criterion.severity.unwrap_or(Severity::Review),
                        message: criterion.flag.clone(),
                        field,
                        value,
                        threshold: criterion.check.threshold_text(),
                    });
                }
                _ => {}
            }
            criteria.push(report);
        }
        let (status, summary) = if !contraindicated.is_empty() {
            (
                Status::NotEligible,
                format!(
                    "Not eligible for {therapy}: absolute contraindication: {}.",
                    contraindicated.join("; ")
                ),
            )
        } else if !unmet.is_empty() {
            (
                Status::NotEligible,
                format!("Not eligible for {therapy}: {}.", unmet.join("; ")),
            )
        } else if !missing.is_empty() {
            (
                Status::Indeterminate,
                format!(
                    "Cannot decide {therapy} until these are recorded: {}.",
                    missing.join(", ")
                ),
            )
        } else {
            let review = flags
                .iter()
                .filter(|f| f.severity != Severity::Info)
                .count();
            let flagged = if review > 0 {
                format!(" {review} safety flag(s) need specialist review.")
            } else {
                String::new()
            };
            (
                Status::Eligible,
                format!(
                    "Can be considered for {therapy}: every required criterion is met. Deciding MDT: {}.{flagged}",
                    mdt.name
                ),
            )
        };
        if status != Status::Indeterminate {
            missing.clear();
        }
        EligibilityAnswer {
            therapy,
            status,
            summary,
            criteria,
            missing,
            flags,
            mdt,
        }
    }

    fn commissioner_on(&self, index: usize, day: NaiveDate) -> CommissionerOnDate {
        let c = &self.commissioners[index];
        let name = c
            .periods
            .iter()
            .find(|(p, _)| p.contains(day))
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| format!("no commissioner recorded for '{}' on {day}", c.id));
        CommissionerOnDate {
            id: c.id.clone(),
            name,
            source: c.source,
        }
    }

    fn delivery_on(
        &self,
        therapy: Therapy,
        facts: &Facts,
        notes: &mut Vec<String>,
    ) -> Vec<SiteOnDate> {
        let Some(rules) = self.therapies.get(&therapy) else {
            return Vec::new();
        };
        let mut undecided = Vec::new();
        for d in &rules.delivery {
            match self.conjunction(&d.when, facts, &mut Vec::new()) {
                Conjunction::AllMet => {
                    return d
                        .periods
                        .iter()
                        .filter(|p| p.period.contains(facts.as_of))
                        .flat_map(|p| {
                            p.sites.iter().map(|&site| SiteOnDate {
                                site,
                                period: p.period,
                                note: p.note.clone(),
                                source: p.source,
                            })
                        })
                        .collect();
                }
                Conjunction::Undecided(missing) => merge(&mut undecided, &missing),
                Conjunction::SomeUnmet => {}
            }
        }
        if !undecided.is_empty() {
            notes.push(format!(
                "The delivery site depends on: {}.",
                undecided.join(", ")
            ));
        }
        Vec::new()
    }

    /// How would `therapy` be funded for this patient on the as-of date? Routes are tried in
    /// policy order; the first whose criteria are all MET is the answer. A route that can be
    /// neither ruled in nor out makes the answer UNDETERMINED, naming what would settle it.
    pub fn funding(&self, facts: &Facts, therapy: Therapy) -> FundingAnswer {
        let nation = facts.patient.demographics.nation;
        let mut answer = FundingAnswer {
            therapy,
            route: FundingRoute::Undetermined,
            summary: String::new(),
            nation,
            commissioner: None,
            prior_approval: None,
            mdt: self.deciding_mdt(therapy, facts),
            sites: Vec::new(),
            criteria: Vec::new(),
            source: None,
            next_if_refused: None,
            missing: Vec::new(),
            route_id: String::new(),
            notes: Vec::new(),
        };
        let Some(rules) = self.therapies.get(&therapy) else {
            answer.summary = self.not_decided(therapy);
            return answer;
        };
        let Some(nation) = nation else {
            answer.missing.push("patient.demographics.nation".into());
            answer.summary = format!(
                "Funding for {therapy} cannot be classified: the nation decides the commissioner and is not recorded."
            );
            return answer;
        };
        let as_of = facts.as_of;
        let routes = rules
            .routes
            .iter()
            .filter(|r| r.nation == nation && r.period.contains(as_of));
        for route in routes {
            let registry = route
                .registry
                .map(|i| (&self.registries[i], self.registries[i].state_on(as_of)));
            // A registry that did not exist on the as-of date offers no route.
            if let Some((_, None)) = registry {
                continue;
            }
            match self.conjunction(&route.when, facts, &mut answer.criteria) {
                Conjunction::SomeUnmet => continue,
                Conjunction::Undecided(missing) => {
                    answer.route_id = route.id.clone();
                    answer.source = Some(route.source);
                    answer.summary = format!(
                        "Funding for {therapy} cannot be classified until these are recorded: {} (they decide whether route '{}' applies).",
                        missing.join(", "),
                        route.id
                    );
                    answer.missing = missing;
                    answer.sites = self.delivery_on(therapy, facts, &mut answer.notes);
                    return answer;
                }
                Conjunction::AllMet => {}
            }
            answer.route = match registry {
                Some((registry, Some(state))) => {
                    let enrolled = facts.registry_enrolments.contains(&registry.id);
                    let line = if enrolled {
                        format!(
                            "The patient is actively enrolled in {}: funded within the audit.",
                            registry.name
                        )
                    } else {
                        let verb = match state.status {
                            RegistryStatus::Open => "is open to new patients",
                            RegistryStatus::ClosedToNewPatients => "is closed to new patients",
                        };
                        format!("{} {verb} on {as_of}. {}", registry.name, state.note)
                            .trim_end()
                            .to_string()
                    };
                    answer.notes.push(line);
                    if enrolled {
                        FundingRoute::WithinAuditRegistry
                    } else {
                        FundingRoute::from(state.status)
                    }
                }
                _ => FundingRoute::from(route.kind),
            };
            answer.route_id = route.id.clone();
            answer.summary = route.summary.clone();
            answer.commissioner = Some(self.commissioner_on(route.commissioner, as_of));
            answer.prior_approval = Some(route.prior_approval);
            answer.next_if_refused = Some(route.next_if_refused);
            answer.source = Some(route.source);
            if let Some(mdt) = route.mdt {
                answer.mdt = self.mdt_ref(mdt);
            }
            answer.sites = match &route.sites {
                Some(sites) => sites
                    .iter()
                    .map(|&site| SiteOnDate {
                        site,
                        period: Period::default(),
                        note: String::new(),
                        source: route.source,
                    })
                    .collect(),
                None => self.delivery_on(therapy, facts, &mut answer.notes),
            };
            answer.notes.extend(route.notes.iter().cloned());
            answer.notes.extend(rules.notes.iter().cloned());
            return answer;
        }
        // Policy validation guarantees a catch-all route per nation that has routes.
        answer.summary = format!(
            "Policy {} has no {nation} funding route for {therapy}; the MDT decides.",
            self.version
        );
        answer
    }
}
