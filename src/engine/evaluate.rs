//! Eligibility and funding decisions: the active policy applied to one patient on one date.
//!
//! Answers borrow from the policy and the patient's facts: the policy's own words are never
//! copied, and a criterion's finding is made once per patient and shared by every answer.

use std::borrow::Cow;
use std::fmt::Write;

use chrono::NaiveDate;

use super::criteria::Facts;
use super::finding::{Detail, Finding, Outcome};
use super::policy::{
    Evidence, FundingRoute, Period, Policy, PriorApproval, RegistryStatus, Role, Selector,
    Severity, Status,
};
use crate::domain::{Nation, Patient, Therapy};

/// A criterion and what it found.
#[derive(Debug, Clone, Copy)]
pub struct CriterionReport<'a> {
    pub criterion: usize,
    pub(crate) finding: &'a Finding,
}

/// Why a safety flag was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    /// An absolute contraindication that is not recorded: exclude it before treatment.
    ContraindicationNotRecorded,
    /// A safety limit is met: specialist review.
    SafetyLimit,
    /// A criterion that decided the answer rests on no document that says it (position 11).
    UnverifiedCriterion,
}

/// A safety finding for specialist review; its words come from the policy and the finding.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlagReport<'a> {
    pub criterion: usize,
    pub severity: Severity,
    pub kind: FlagKind,
    pub finding: &'a Finding,
}

#[derive(Debug, Clone)]
pub struct EligibilityAnswer<'a> {
    pub therapy: Therapy,
    pub status: Status,
    /// Explained answers only: BASIC answers carry the status alone.
    pub summary: String,
    /// Explained answers only.
    pub criteria: Vec<CriterionReport<'a>>,
    pub missing: Vec<&'static str>,
    pub(crate) flags: Vec<FlagReport<'a>>,
    /// The deciding MDT (an index into the policy's MDTs).
    pub mdt: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct CommissionerOnDate<'a> {
    pub id: &'a str,
    pub name: Cow<'a, str>,
    pub source: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct SiteOnDate<'a> {
    pub site: usize,
    pub period: Period,
    pub note: &'a str,
    pub source: usize,
}

#[derive(Debug, Clone)]
pub struct FundingAnswer<'a> {
    pub therapy: Therapy,
    pub route: FundingRoute,
    /// Explained answers only, like `commissioner`: BASIC answers carry the route alone.
    pub summary: Cow<'a, str>,
    pub nation: Option<Nation>,
    /// Explained answers only, like `sites` and `notes`: BASIC answers do not show them.
    pub(crate) commissioner: Option<CommissionerOnDate<'a>>,
    pub(crate) prior_approval: Option<PriorApproval>,
    /// The deciding MDT (an index into the policy's MDTs).
    pub mdt: usize,
    pub(crate) sites: Vec<SiteOnDate<'a>>,
    /// Explained answers only.
    pub criteria: Vec<CriterionReport<'a>>,
    pub source: Option<usize>,
    pub next_if_refused: Option<FundingRoute>,
    pub missing: Vec<&'static str>,
    pub route_id: &'a str,
    /// Explained answers only: BASIC answers carry no notes.
    pub notes: Vec<Cow<'a, str>>,
}

/// Adds `items` to `into`, keeping first-seen order and no repeats.
fn merge(into: &mut Vec<&'static str>, items: &[&'static str]) {
    for item in items {
        if !into.contains(item) {
            into.push(item);
        }
    }
}

/// All MET, some UNMET, or undecided (with what would settle the unknown ones).
enum Conjunction {
    AllMet,
    SomeUnmet,
    Undecided(Vec<&'static str>),
}

impl Policy {
    /// Derives what every criterion may need, once per patient and date; answers built from
    /// these facts say as much as `detail` asks.
    pub fn facts<'a>(&self, patient: &'a Patient, as_of: NaiveDate, detail: Detail) -> Facts<'a> {
        Facts {
            patient,
            as_of,
            age: patient.age_on(as_of),
            grade: self.grading.assess(patient, detail),
            registry_enrolments: Vec::new(),
            detail,
            findings: (0..self.criteria.len())
                .map(|_| std::cell::OnceCell::new())
                .collect(),
            geographic_mdt: std::cell::OnceCell::new(),
        }
    }

    /// One criterion's finding at the facts' detail (composites evaluate their members), made
    /// once per patient and date.
    pub(crate) fn finding<'f>(&self, criterion: usize, facts: &'f Facts) -> &'f Finding {
        match (facts.findings.get(criterion), self.criteria.get(criterion)) {
            (Some(cell), Some(c)) => cell.get_or_init(|| {
                c.check
                    .evaluate(facts, facts.detail, &|member| self.finding(member, facts))
            }),
            _ => Facts::not_in_policy(),
        }
    }

    fn report<'f>(&self, criterion: usize, facts: &'f Facts) -> CriterionReport<'f> {
        CriterionReport {
            criterion,
            finding: self.finding(criterion, facts),
        }
    }

    fn conjunction<'f>(
        &self,
        when: &[usize],
        facts: &'f Facts,
        reports: &mut Vec<CriterionReport<'f>>,
    ) -> Conjunction {
        let mut missing = Vec::new();
        let (mut unmet, mut unknown) = (false, false);
        for &c in when {
            let report = self.report(c, facts);
            match report.finding.outcome {
                Outcome::Met | Outcome::NotApplicable => {}
                Outcome::Unmet => unmet = true,
                Outcome::Unknown => {
                    unknown = true;
                    merge(&mut missing, &report.finding.missing);
                }
            }
            // The criteria an answer lists are shown only when it is explained.
            if facts.detail.explains() && !reports.iter().any(|r| r.criterion == c) {
                reports.push(report);
            }
        }
        if unmet {
            Conjunction::SomeUnmet
        } else if unknown {
            Conjunction::Undecided(missing)
        } else {
            Conjunction::AllMet
        }
    }

    /// The first selector whose criteria are all MET; unknown ones are passed over.
    fn select(&self, selectors: &[Selector], facts: &Facts) -> Option<usize> {
        selectors
            .iter()
            .find(|s| {
                s.when
                    .iter()
                    .all(|&c| self.finding(c, facts).outcome.holds())
            })
            .map(|s| s.target)
    }

    /// The deciding MDT: an overriding rule (a child's paediatric MDT), else the therapy's own
    /// rule, else the geographic rule, else the fallback.
    fn deciding_mdt(&self, therapy: Therapy, facts: &Facts) -> usize {
        let own = || {
            self.therapies
                .get(&therapy)
                .and_then(|t| self.select(&t.mdt, facts))
        };
        let chosen = self.select(&self.mdt_overrides, facts).or_else(own);
        chosen
            .or_else(|| {
                *facts
                    .geographic_mdt
                    .get_or_init(|| self.select(&self.mdt_rules, facts))
            })
            .unwrap_or(self.fallback_mdt)
    }

    /// The summary of a therapy the policy does not decide (explained answers only).
    fn not_decided(&self, therapy: Therapy, facts: &Facts) -> Cow<'static, str> {
        if !facts.detail.explains() {
            return Cow::Borrowed("");
        }
        Cow::Owned(format!(
            "Policy {} does not yet decide {therapy}: no answer is given rather than a guess; the MDT decides.",
            self.version
        ))
    }

    /// Can the patient be considered for `therapy`? (clinical README, positions 1-3)
    pub fn eligibility<'a>(&'a self, facts: &'a Facts, therapy: Therapy) -> EligibilityAnswer<'a> {
        let mdt = self.deciding_mdt(therapy, facts);
        let Some(rules) = self.therapies.get(&therapy) else {
            return EligibilityAnswer {
                therapy,
                status: Status::Indeterminate,
                summary: self.not_decided(therapy, facts).into_owned(),
                criteria: Vec::new(),
                missing: Vec::new(),
                flags: Vec::new(),
                mdt,
            };
        };
        // BASIC answers list no criteria: no allocation for a list nobody reads.
        let explains = facts.detail.explains();
        let mut criteria = Vec::with_capacity(if explains { rules.eligibility.len() } else { 0 });
        let mut missing = Vec::new();
        let (mut unmet, mut contraindicated) = (false, false);
        let mut flags = Vec::new();
        for &c in &rules.eligibility {
            let report = self.report(c, facts);
            let criterion = &self.criteria[c];
            let f = report.finding;
            match (criterion.role, f.outcome) {
                (Role::Required, Outcome::Unmet) => unmet = true,
                (Role::Required, Outcome::Unknown) => merge(&mut missing, &f.missing),
                (Role::Contraindication, Outcome::Met) => contraindicated = true,
                (Role::Contraindication, Outcome::Unknown) => flags.push(FlagReport {
                    criterion: c,
                    severity: Severity::Review,
                    kind: FlagKind::ContraindicationNotRecorded,
                    finding: f,
                }),
                (Role::Safety, Outcome::Met) => flags.push(FlagReport {
                    criterion: c,
                    severity: criterion.severity.unwrap_or(Severity::Review),
                    kind: FlagKind::SafetyLimit,
                    finding: f,
                }),
                _ => {}
            }
            // A criterion decides when a required one is MET or UNMET, or a contraindication MET.
            let decides = match criterion.role {
                Role::Required => matches!(f.outcome, Outcome::Met | Outcome::Unmet),
                Role::Contraindication => f.outcome == Outcome::Met,
                Role::Safety => false,
            };
            if criterion.to_verify && decides {
                flags.push(FlagReport {
                    criterion: c,
                    severity: Severity::Review,
                    kind: FlagKind::UnverifiedCriterion,
                    finding: f,
                });
            }
            if explains {
                criteria.push(report);
            }
        }
        // Position 10: a withhold flag is a hard stop that reading the status alone shows.
        let withheld = flags.iter().any(|f| f.severity == Severity::Withhold);
        let status = if contraindicated || unmet {
            Status::NotEligible
        } else if withheld {
            Status::Held
        } else if !missing.is_empty() {
            Status::Indeterminate
        } else {
            Status::Eligible
        };
        if !matches!(status, Status::Indeterminate | Status::Held) {
            missing.clear();
        }
        let mut answer = EligibilityAnswer {
            therapy,
            status,
            summary: String::new(),
            criteria,
            missing,
            flags,
            mdt,
        };
        // BASIC answers carry the status only (AIP-157): the sentence that says why is written
        // for explained answers alone.
        if explains {
            answer.summary = self.eligibility_summary(&answer, contraindicated);
        }
        answer
    }

    /// One sentence for a clinician: the status and, in the clinic's words, each criterion
    /// that decided it.
    fn eligibility_summary(&self, answer: &EligibilityAnswer, contraindicated: bool) -> String {
        let EligibilityAnswer {
            therapy,
            criteria,
            missing,
            flags,
            mdt,
            ..
        } = answer;
        // Each criterion that decided, in the clinic's words with what it found. The findings
        // are explained: summaries are written for explained facts.
        let list = |summary: &mut String, decisive: &mut dyn Iterator<Item = (usize, &Finding)>| {
            for (i, (criterion, finding)) in decisive.enumerate() {
                if i > 0 {
                    summary.push_str("; ");
                }
                summary.push_str(&self.criteria[criterion].description);
                summary.push_str(" (");
                summary.push_str(&finding.explanation);
                summary.push(')');
            }
        };
        // The summary quotes why: each decisive criterion of `role` with `outcome`.
        let quote = |summary: &mut String, role: Role, outcome: Outcome| {
            list(
                summary,
                &mut criteria
                    .iter()
                    .filter(|r| {
                        self.criteria[r.criterion].role == role && r.finding.outcome == outcome
                    })
                    .map(|r| (r.criterion, r.finding)),
            );
            summary.push('.');
        };
        // Built by appending: a decision makes one summary per therapy, and `format!` costs
        // more than the decision's criteria.
        let sentence = |parts: &[&str]| {
            let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 96);
            parts.iter().for_each(|p| text.push_str(p));
            text
        };
        let therapy_name = therapy.label();
        if contraindicated {
            let mut summary = sentence(&[
                "Not eligible for ",
                therapy_name,
                ": absolute contraindication: ",
            ]);
            quote(&mut summary, Role::Contraindication, Outcome::Met);
            summary
        } else if answer.status == Status::NotEligible {
            let mut summary = sentence(&["Not eligible for ", therapy_name, ": "]);
            quote(&mut summary, Role::Required, Outcome::Unmet);
            summary
        } else if answer.status == Status::Held {
            let mut summary = sentence(&[
                "Held: do not give ",
                therapy_name,
                " until a specialist clears: ",
            ]);
            list(
                &mut summary,
                &mut flags
                    .iter()
                    .filter(|f| f.severity == Severity::Withhold)
                    .map(|f| (f.criterion, f.finding)),
            );
            let _ = write!(summary, ". Deciding MDT: {}.", self.mdts[*mdt].name);
            if !missing.is_empty() {
                let _ = write!(summary, " Also not yet recorded: {}.", missing.join(", "));
            }
            summary
        } else if !missing.is_empty() {
            let mut summary = sentence(&[
                "Cannot decide ",
                therapy_name,
                " until these are recorded: ",
            ]);
            for (i, m) in missing.iter().enumerate() {
                if i > 0 {
                    summary.push_str(", ");
                }
                summary.push_str(m);
            }
            summary.push('.');
            summary
        } else {
            let review = flags
                .iter()
                .filter(|f| f.severity != Severity::Info)
                .count();
            let mut summary = sentence(&[
                "Can be considered for ",
                therapy_name,
                ": every required criterion is met. Deciding MDT: ",
                &self.mdts[*mdt].name,
                ".",
            ]);
            if review > 0 {
                let _ = write!(summary, " {review} safety flag(s) need specialist review.");
            }
            summary
        }
    }

    fn commissioner_on(&self, index: usize, day: NaiveDate) -> CommissionerOnDate<'_> {
        let c = &self.commissioners[index];
        let name = c
            .periods
            .iter()
            .find(|(p, _)| p.contains(day))
            .map(|(_, n)| Cow::Borrowed(n.as_str()))
            .unwrap_or_else(|| {
                Cow::Owned(format!("no commissioner recorded for '{}' on {day}", c.id))
            });
        CommissionerOnDate {
            id: &c.id,
            name,
            source: c.source,
        }
    }

    /// Where the therapy is delivered on the as-of date. Explained answers only: BASIC
    /// answers show no sites.
    fn delivery_on<'a>(
        &'a self,
        therapy: Therapy,
        facts: &'a Facts,
        notes: &mut Vec<Cow<'a, str>>,
    ) -> Vec<SiteOnDate<'a>> {
        let Some(rules) = self.therapies.get(&therapy) else {
            return Vec::new();
        };
        if !facts.detail.explains() {
            return Vec::new();
        }
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
                                note: &p.note,
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
            notes.push(Cow::Owned(format!(
                "The delivery site depends on: {}.",
                undecided.join(", ")
            )));
        }
        Vec::new()
    }

    /// How would `therapy` be funded for this patient on the as-of date? Routes are tried in
    /// policy order; the first whose criteria are all MET is the answer. A route that can be
    /// neither ruled in nor out makes the answer UNDETERMINED, naming what would settle it.
    pub fn funding<'a>(&'a self, facts: &'a Facts, therapy: Therapy) -> FundingAnswer<'a> {
        let nation = facts.patient.demographics.nation;
        let explains = facts.detail.explains();
        let mut answer = FundingAnswer {
            therapy,
            route: FundingRoute::Undetermined,
            summary: Cow::Borrowed(""),
            nation,
            commissioner: None,
            prior_approval: None,
            mdt: self.deciding_mdt(therapy, facts),
            sites: Vec::new(),
            criteria: Vec::with_capacity(if explains { 8 } else { 0 }),
            source: None,
            next_if_refused: None,
            missing: Vec::new(),
            route_id: "",
            notes: Vec::new(),
        };
        let Some(rules) = self.therapies.get(&therapy) else {
            answer.summary = self.not_decided(therapy, facts);
            return answer;
        };
        let Some(nation) = nation else {
            answer.missing.push("patient.demographics.nation");
            if explains {
                answer.summary = Cow::Owned(format!(
                    "Funding for {therapy} cannot be classified: the nation decides the commissioner and is not recorded."
                ));
            }
            return answer;
        };
        // Position 10: a therapy the patient cannot have has no funding route, whatever the
        // commissioning text says.
        let contraindication = rules.eligibility.iter().copied().find(|&c| {
            self.criteria[c].role == Role::Contraindication
                && self.finding(c, facts).outcome == Outcome::Met
        });
        if let Some(c) = contraindication {
            let criterion = &self.criteria[c];
            answer.route = FundingRoute::Contraindicated;
            answer.source = Some(criterion.source);
            if explains {
                answer.summary = Cow::Owned(format!(
                    "No funding route: {therapy} is contraindicated ({}: {}). The eligibility answer names the contraindication.",
                    criterion.description,
                    self.finding(c, facts).explanation
                ));
                answer.criteria.push(self.report(c, facts));
            }
            return answer;
        }
        let as_of = facts.as_of;
        let routes = self
            .common_routes
            .iter()
            .chain(&rules.routes)
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
                    answer.route_id = &route.id;
                    answer.source = Some(route.source);
                    if explains {
                        answer.summary = Cow::Owned(format!(
                            "Funding for {therapy} cannot be classified until these are recorded: {} (they decide whether route '{}' applies).",
                            missing.join(", "),
                            route.id
                        ));
                    }
                    answer.missing = missing;
                    answer.sites = self.delivery_on(therapy, facts, &mut answer.notes);
                    return answer;
                }
                Conjunction::AllMet => {}
            }
            answer.route = match registry {
                Some((registry, Some(state))) => {
                    let enrolled = facts.registry_enrolments.contains(&registry.id);
                    if explains {
                        answer.notes.push(Cow::Owned(if enrolled {
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
                        }));
                    }
                    if enrolled {
                        FundingRoute::WithinAuditRegistry
                    } else {
                        FundingRoute::from(state.status)
                    }
                }
                _ => FundingRoute::from(route.kind),
            };
            answer.route_id = &route.id;
            if explains {
                answer.summary = Cow::Borrowed(&route.summary);
            }
            if explains {
                answer.commissioner = Some(self.commissioner_on(route.commissioner, as_of));
            }
            answer.prior_approval = Some(route.prior_approval);
            answer.next_if_refused = Some(route.next_if_refused);
            answer.source = Some(route.source);
            if let Some(mdt) = route.mdt {
                answer.mdt = mdt;
            }
            answer.sites = match &route.sites {
                Some(_) if !explains => Vec::new(),
                Some(sites) => sites
                    .iter()
                    .map(|&site| SiteOnDate {
                        site,
                        period: Period::default(),
                        note: "",
                        source: route.source,
                    })
                    .collect(),
                None => self.delivery_on(therapy, facts, &mut answer.notes),
            };
            if explains {
                // Position 11: a route no document confirms is never presented as sourced.
                let source = &self.sources[route.source];
                if source.evidence == Evidence::ToVerify {
                    answer.notes.push(Cow::Owned(format!(
                        "This route rests on a source tagged to verify ({}): confirm it with the commissioner.",
                        source.document
                    )));
                }
                answer.notes.extend(
                    route
                        .notes
                        .iter()
                        .chain(&rules.notes)
                        .map(|n| Cow::Borrowed(n.as_str())),
                );
            }
            return answer;
        }
        // Policy validation guarantees a catch-all route per nation that has routes.
        if explains {
            answer.summary = Cow::Owned(format!(
                "Policy {} has no {nation} funding route for {therapy}; the MDT decides.",
                self.version
            ));
        }
        answer
    }
}
