//! The policy: a versioned TOML file that composes catalogue checks into eligibility rules and
//! funding routes, with dated facts (commissioners, delivery sites, registry states) and the
//! source of every rule. Loading is validation: any problem is reported with file, line and
//! reason, the example cases the file carries must all pass, and only then is a [`Policy`] made.

use std::collections::{HashMap, HashSet};

use chrono::NaiveDate;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::criteria::Check;
use super::finding::Detail;
use super::grading::GradingParameters;
use crate::domain::{Nation, Patient, Therapy, dates};

/// The policy that ships in the binary and serves when no path is configured.
pub(crate) const BUNDLED_POLICY: &str = include_str!("../../policy/net-pathway.toml");
/// The name the bundled policy reports in errors.
pub(crate) const BUNDLED_POLICY_NAME: &str = "policy/net-pathway.toml (bundled)";

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct PolicyIssue {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

/// Why a policy was refused. The last good policy stays active.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("policy is invalid:\n{}", list(.0))]
    Invalid(Vec<PolicyIssue>),
    #[error("policy example cases failed:\n{}", list(.0))]
    CasesFailed(Vec<PolicyIssue>),
}

impl PolicyError {
    /// Every issue, for callers that report them one by one.
    pub fn issues(&self) -> &[PolicyIssue] {
        match self {
            PolicyError::Read { .. } => &[],
            PolicyError::Invalid(i) | PolicyError::CasesFailed(i) => i,
        }
    }
}

fn list(issues: &[PolicyIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("  {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How strongly a source supports a rule (the evidence tags of docs/clinical-reference.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Evidence {
    Source,
    ServicePage,
    ToVerify,
    Secondary,
    ServiceFact,
}

/// What a criterion does to an eligibility answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    #[default]
    Required,
    Contraindication,
    Safety,
}

/// Severity of a safety flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Severity {
    Info,
    Review,
    Withhold,
}

/// A funding route as written in the policy. `AuditRegistry` resolves by the registry's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RouteKind {
    RoutinelyCommissionedNiceTa,
    PriorApprovalRequired,
    RoutinelyCommissioned,
    AuditRegistry,
    IndividualFundingRequest,
    IndividualPatientFundingRequest,
    NotRoutinelyCommissioned,
    /// The MDT must decide, for the reason the route's summary gives (not missing inputs).
    MdtDecision,
}

/// A funding route as answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FundingRoute {
    RoutinelyCommissionedNiceTa,
    PriorApprovalRequired,
    RoutinelyCommissioned,
    WithinAuditRegistry,
    AuditRegistryClosed,
    IndividualFundingRequest,
    IndividualPatientFundingRequest,
    NotRoutinelyCommissioned,
    /// Inputs are missing: the answer names them.
    Undetermined,
    /// The deciding MDT must decide, for the reason in the summary.
    MdtDecision,
    /// An absolute contraindication: no funding route applies.
    Contraindicated,
}

impl From<RouteKind> for FundingRoute {
    /// The answer a route kind gives; an audit registry route is resolved by the registry's
    /// state on the as-of date before this is used, and reads as closed when it is not.
    fn from(kind: RouteKind) -> Self {
        match kind {
            RouteKind::RoutinelyCommissionedNiceTa => FundingRoute::RoutinelyCommissionedNiceTa,
            RouteKind::PriorApprovalRequired => FundingRoute::PriorApprovalRequired,
            RouteKind::RoutinelyCommissioned => FundingRoute::RoutinelyCommissioned,
            RouteKind::AuditRegistry => FundingRoute::AuditRegistryClosed,
            RouteKind::IndividualFundingRequest => FundingRoute::IndividualFundingRequest,
            RouteKind::IndividualPatientFundingRequest => {
                FundingRoute::IndividualPatientFundingRequest
            }
            RouteKind::NotRoutinelyCommissioned => FundingRoute::NotRoutinelyCommissioned,
            RouteKind::MdtDecision => FundingRoute::MdtDecision,
        }
    }
}

impl From<RegistryStatus> for FundingRoute {
    fn from(status: RegistryStatus) -> Self {
        match status {
            RegistryStatus::Open => FundingRoute::WithinAuditRegistry,
            RegistryStatus::ClosedToNewPatients => FundingRoute::AuditRegistryClosed,
        }
    }
}

impl Registry {
    /// The registry's state on `day`; `None` before it existed.
    pub fn state_on(&self, day: NaiveDate) -> Option<&RegistryPeriod> {
        self.periods.iter().find(|p| p.period.contains(day))
    }
}

impl Policy {
    /// The route a rule gives on `day`, resolving an audit registry by its state that day.
    pub fn route_on(&self, route: &Route, day: NaiveDate) -> FundingRoute {
        match route
            .registry
            .and_then(|r| self.registries[r].state_on(day))
        {
            Some(state) => FundingRoute::from(state.status),
            None => FundingRoute::from(route.kind),
        }
    }
}

/// How prior approval is sought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PriorApproval {
    None,
    Blueteq,
    IndividualRequest,
    RegistryAgreement,
}

/// State of an audit registry on a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RegistryStatus {
    Open,
    ClosedToNewPatients,
}

/// Eligibility status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Eligible,
    NotEligible,
    Indeterminate,
    /// No required criterion unmet and no contraindication, but a withhold flag stands
    /// (clinical README, position 10).
    Held,
}

/// An inclusive date range; `None` ends are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Period {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl Period {
    pub fn contains(&self, day: NaiveDate) -> bool {
        self.from.is_none_or(|f| f <= day) && self.to.is_none_or(|t| day <= t)
    }

    fn overlaps(&self, other: &Period) -> bool {
        let starts_before_other_ends = match (self.from, other.to) {
            (Some(f), Some(t)) => f <= t,
            _ => true,
        };
        let other_starts_before_self_ends = match (other.from, self.to) {
            (Some(f), Some(t)) => f <= t,
            _ => true,
        };
        starts_before_other_ends && other_starts_before_self_ends
    }
}

pub struct Source {
    pub id: String,
    pub document: String,
    pub section: String,
    pub published: Option<NaiveDate>,
    pub url: String,
    pub(crate) evidence: Evidence,
}

pub struct Criterion {
    pub id: String,
    pub description: String,
    pub(crate) role: Role,
    pub check_name: String,
    /// The check's parameters as the policy file writes them (a TOML inline table).
    pub parameters: String,
    /// The same parameters as values.
    pub parameter_table: toml::Table,
    pub(crate) check: Check,
    pub source: usize,
    pub(crate) severity: Option<Severity>,
    /// The message a safety flag carries.
    pub flag: String,
    /// No document in the reference says this as the criterion applies it: answers flag it
    /// for specialist review (clinical README, position 11).
    pub to_verify: bool,
}

pub(crate) struct Named {
    pub id: String,
    pub name: String,
}

pub(crate) struct Commissioner {
    pub id: String,
    pub source: usize,
    pub periods: Vec<(Period, String)>,
}

/// A registry's state over a date range.
pub(crate) struct RegistryPeriod {
    pub period: Period,
    pub status: RegistryStatus,
    pub note: String,
    /// While open: how many new patients may be actively enrolled at once (none: no limit).
    pub capacity: Option<i64>,
}

pub(crate) struct Registry {
    pub id: String,
    pub name: String,
    pub periods: Vec<RegistryPeriod>,
}

/// "When these criteria are all MET, use this target."
pub(crate) struct Selector {
    pub when: Vec<usize>,
    pub target: usize,
}

pub(crate) struct DeliveryPeriod {
    pub period: Period,
    pub sites: Vec<usize>,
    pub source: usize,
    pub note: String,
}

pub struct Delivery {
    pub when: Vec<usize>,
    pub(crate) periods: Vec<DeliveryPeriod>,
}

pub struct Route {
    pub id: String,
    pub nation: Nation,
    pub(crate) kind: RouteKind,
    pub when: Vec<usize>,
    pub commissioner: usize,
    pub(crate) prior_approval: PriorApproval,
    pub next_if_refused: FundingRoute,
    pub(crate) period: Period,
    pub source: usize,
    pub summary: String,
    pub notes: Vec<String>,
    pub mdt: Option<usize>,
    pub sites: Option<Vec<usize>>,
    pub registry: Option<usize>,
}

pub(crate) struct TherapyPolicy {
    pub therapy: Therapy,
    pub eligibility: Vec<usize>,
    pub mdt: Vec<Selector>,
    pub delivery: Vec<Delivery>,
    pub routes: Vec<Route>,
    pub notes: Vec<String>,
}

/// An example case the policy carries: a patient and what the policy must answer.
pub struct Case {
    pub name: String,
    pub line: usize,
    pub as_of: NaiveDate,
    pub patient: Patient,
    pub(crate) expectations: Vec<(usize, Expectation)>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expectation {
    pub therapy: Therapy,
    pub status: Option<Status>,
    pub route: Option<FundingRoute>,
    pub mdt: Option<String>,
    pub sites: Option<Vec<String>>,
    pub commissioner: Option<String>,
    pub missing: Option<Vec<String>>,
}

/// Each therapy's rules, found by the therapy's place in `Therapy::ALL`. A decision looks its
/// therapy up three or four times; a `BTreeMap` search took 4 % of a screened patient's
/// instructions.
#[derive(Default)]
pub(crate) struct TherapyPolicies(Vec<Option<TherapyPolicy>>);

impl TherapyPolicies {
    pub fn get(&self, therapy: &Therapy) -> Option<&TherapyPolicy> {
        self.0.get(*therapy as usize)?.as_ref()
    }

    fn contains_key(&self, therapy: &Therapy) -> bool {
        self.get(therapy).is_some()
    }

    fn insert(&mut self, therapy: Therapy, rules: TherapyPolicy) {
        let at = therapy as usize;
        if self.0.len() <= at {
            self.0.resize_with(at + 1, || None);
        }
        self.0[at] = Some(rules);
    }
}

/// A validated policy, ready to decide.
pub struct Policy {
    pub version: String,
    pub title: String,
    pub(crate) period: Period,
    pub file: String,
    pub content_hash: String,
    pub sources: Vec<Source>,
    pub(crate) grading: GradingParameters,
    pub grading_sources: (usize, usize),
    pub criteria: Vec<Criterion>,
    pub(crate) commissioners: Vec<Commissioner>,
    pub(crate) mdts: Vec<Named>,
    pub(crate) sites: Vec<Named>,
    pub(crate) registries: Vec<Registry>,
    pub(crate) mdt_rules: Vec<Selector>,
    /// MDT rules that come before a therapy's own (a child goes to the paediatric MDT).
    pub(crate) mdt_overrides: Vec<Selector>,
    /// Routes tried before each therapy's own routes (a child is outside the adult pathways).
    pub common_routes: Vec<Route>,
    pub fallback_mdt: usize,
    pub(crate) therapies: TherapyPolicies,
    pub cases: Vec<Case>,
}

// ---- The file as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    policy: RawHeader,
    grading: Spanned<GradingParameters>,
    #[serde(default)]
    sources: Vec<Spanned<RawSource>>,
    #[serde(default)]
    commissioners: Vec<Spanned<RawCommissioner>>,
    #[serde(default)]
    mdts: Vec<Spanned<RawNamed>>,
    #[serde(default)]
    sites: Vec<Spanned<RawNamed>>,
    #[serde(default)]
    registries: Vec<Spanned<RawRegistry>>,
    #[serde(default)]
    criteria: Vec<Spanned<RawCriterion>>,
    #[serde(default)]
    mdt_rules: Vec<Spanned<RawSelector>>,
    #[serde(default)]
    mdt_overrides: Vec<Spanned<RawSelector>>,
    #[serde(default)]
    common_routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    therapies: Vec<Spanned<RawTherapy>>,
    #[serde(default)]
    cases: Vec<Spanned<RawCase>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    version: Spanned<String>,
    title: String,
    #[serde(deserialize_with = "dates::required")]
    effective_from: NaiveDate,
    #[serde(default, deserialize_with = "dates::optional")]
    effective_to: Option<NaiveDate>,
    /// The MDT named when no rule picks one.
    fallback_mdt: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    id: String,
    document: String,
    #[serde(default)]
    section: String,
    #[serde(default, deserialize_with = "dates::optional")]
    published: Option<NaiveDate>,
    #[serde(default)]
    url: String,
    evidence: Evidence,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamedPeriod {
    name: String,
    #[serde(default, deserialize_with = "dates::optional")]
    effective_from: Option<NaiveDate>,
    #[serde(default, deserialize_with = "dates::optional")]
    effective_to: Option<NaiveDate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommissioner {
    id: String,
    source: String,
    periods: Vec<Spanned<RawNamedPeriod>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamed {
    id: String,
    name: String,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistryPeriod {
    status: RegistryStatus,
    #[serde(default, deserialize_with = "dates::optional")]
    effective_from: Option<NaiveDate>,
    #[serde(default, deserialize_with = "dates::optional")]
    effective_to: Option<NaiveDate>,
    #[serde(default)]
    note: String,
    capacity: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    id: String,
    name: String,
    source: String,
    periods: Vec<Spanned<RawRegistryPeriod>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCriterion {
    id: String,
    description: String,
    check: String,
    #[serde(default)]
    role: Role,
    #[serde(default)]
    params: toml::Table,
    source: String,
    severity: Option<Severity>,
    flag: Option<String>,
    #[serde(default)]
    to_verify: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelector {
    #[serde(default)]
    when: Vec<String>,
    mdt: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeliveryPeriod {
    sites: Vec<String>,
    #[serde(default, deserialize_with = "dates::optional")]
    effective_from: Option<NaiveDate>,
    #[serde(default, deserialize_with = "dates::optional")]
    effective_to: Option<NaiveDate>,
    source: String,
    #[serde(default)]
    note: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    #[serde(default)]
    when: Vec<String>,
    periods: Vec<Spanned<RawDeliveryPeriod>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    id: String,
    nation: Nation,
    route: RouteKind,
    #[serde(default)]
    when: Vec<String>,
    commissioner: String,
    prior_approval: PriorApproval,
    next_if_refused: FundingRoute,
    #[serde(default, deserialize_with = "dates::optional")]
    effective_from: Option<NaiveDate>,
    #[serde(default, deserialize_with = "dates::optional")]
    effective_to: Option<NaiveDate>,
    source: String,
    summary: String,
    #[serde(default)]
    notes: Vec<String>,
    mdt: Option<String>,
    sites: Option<Vec<String>>,
    registry: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTherapy {
    therapy: Therapy,
    eligibility: Vec<String>,
    #[serde(default)]
    mdt: Vec<Spanned<RawSelector>>,
    #[serde(default)]
    delivery: Vec<Spanned<RawDelivery>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    notes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    #[serde(deserialize_with = "dates::required")]
    as_of: NaiveDate,
    source: String,
    patient: Patient,
    expect: Vec<Spanned<Expectation>>,
}

// ---- Loading ----

struct Loader<'a> {
    file: &'a str,
    text: &'a str,
    issues: Vec<PolicyIssue>,
}

impl Loader<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text
            .get(..offset)
            .map_or(1, |t| t.bytes().filter(|b| *b == b'\n').count() + 1)
    }

    fn issue(&mut self, offset: usize, reason: impl Into<String>) {
        let line = self.line(offset);
        self.issues.push(PolicyIssue {
            file: self.file.to_string(),
            line,
            reason: reason.into(),
        });
    }

    fn lookup(
        &mut self,
        index: &HashMap<String, usize>,
        id: &str,
        what: &str,
        offset: usize,
    ) -> usize {
        match index.get(id) {
            Some(i) => *i,
            None => {
                self.issue(offset, format!("unknown {what} '{id}'"));
                0
            }
        }
    }

    fn index<T>(
        &mut self,
        items: &[Spanned<T>],
        id: impl Fn(&T) -> &str,
        what: &str,
    ) -> HashMap<String, usize> {
        let mut map = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let key = id(item.get_ref()).to_string();
            if key.is_empty() {
                self.issue(item.span().start, format!("{what} id must not be empty"));
            } else if map.insert(key.clone(), i).is_some() {
                self.issue(item.span().start, format!("duplicate {what} id '{key}'"));
            }
        }
        map
    }

    fn period(&mut self, from: Option<NaiveDate>, to: Option<NaiveDate>, offset: usize) -> Period {
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            self.issue(
                offset,
                format!("effective_from {f} is after effective_to {t}"),
            );
        }
        Period { from, to }
    }

    fn no_overlaps(&mut self, periods: &[(Period, usize)], what: &str) {
        for (i, (a, _)) in periods.iter().enumerate() {
            for (b, offset) in &periods[i + 1..] {
                if a.overlaps(b) {
                    self.issue(
                        *offset,
                        format!("{what}: this date range overlaps an earlier one"),
                    );
                }
            }
        }
    }
}

impl Policy {
    /// Reads and validates the policy at `path`.
    pub fn load_file(path: &std::path::Path) -> Result<Policy, PolicyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            file: file.clone(),
            source,
        })?;
        Policy::parse(&file, &text)
    }

    /// The policy compiled into the binary.
    pub fn bundled() -> Result<Policy, PolicyError> {
        Policy::parse(BUNDLED_POLICY_NAME, BUNDLED_POLICY)
    }

    /// Validates `text` (named `file` in errors), then runs its example cases.
    pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
        let mut l = Loader {
            file,
            text,
            issues: Vec::new(),
        };
        let raw: RawPolicy = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                l.issue(offset, e.message().trim().to_string());
                return Err(PolicyError::Invalid(l.issues));
            }
        };
        let policy = compile(&mut l, raw, text);
        if !l.issues.is_empty() {
            return Err(PolicyError::Invalid(l.issues));
        }
        let failures = policy.run_cases();
        if !failures.is_empty() {
            return Err(PolicyError::CasesFailed(failures));
        }
        Ok(policy)
    }

    pub fn source(&self, index: usize) -> &Source {
        &self.sources[index]
    }

    /// Runs every example case; returns one issue per unmet expectation.
    pub fn run_cases(&self) -> Vec<PolicyIssue> {
        let mut failures = Vec::new();
        for case in &self.cases {
            let today = chrono::Utc::now().date_naive();
            let violations = case.patient.validate(today.max(case.as_of), case.as_of);
            if !violations.is_empty() {
                for v in violations {
                    failures.push(PolicyIssue {
                        file: self.file.clone(),
                        line: case.line,
                        reason: format!(
                            "case '{}': patient.{}: {}",
                            case.name, v.field, v.description
                        ),
                    });
                }
                continue;
            }
            // Each case is decided at both details: how much an answer says never changes it.
            let outcome = self.facts(&case.patient, case.as_of, Detail::OUTCOME);
            let explained = self.facts(&case.patient, case.as_of, Detail::EXPLAINED);
            for (line, expect) in &case.expectations {
                let problems = self
                    .check_expectation(&explained, expect)
                    .into_iter()
                    .chain(self.same_at_both_details(&outcome, &explained, expect.therapy));
                for problem in problems {
                    failures.push(PolicyIssue {
                        file: self.file.clone(),
                        line: *line,
                        reason: format!("case '{}', {}: {problem}", case.name, expect.therapy),
                    });
                }
            }
        }
        failures
    }

    fn check_expectation(
        &self,
        facts: &super::criteria::Facts,
        expect: &Expectation,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let eligibility = self.eligibility(facts, expect.therapy);
        let funding = self.funding(facts, expect.therapy);
        if let Some(status) = expect.status
            && status != eligibility.status
        {
            problems.push(format!(
                "expected status {status:?}, got {:?} ({})",
                eligibility.status, eligibility.summary
            ));
        }
        if let Some(missing) = &expect.missing
            && *missing != eligibility.missing
        {
            problems.push(format!(
                "expected missing inputs {missing:?}, got {:?}",
                eligibility.missing
            ));
        }
        if let Some(route) = expect.route
            && route != funding.route
        {
            problems.push(format!(
                "expected route {route:?}, got {:?} ({})",
                funding.route, funding.summary
            ));
        }
        if let Some(mdt) = &expect.mdt
            && *mdt != self.mdts[funding.mdt].id
        {
            problems.push(format!(
                "expected deciding MDT '{mdt}', got '{}'",
                self.mdts[funding.mdt].id
            ));
        }
        if let Some(sites) = &expect.sites {
            let got: Vec<&str> = funding
                .sites
                .iter()
                .map(|s| self.sites[s.site].id.as_str())
                .collect();
            if got != sites.iter().map(String::as_str).collect::<Vec<_>>() {
                problems.push(format!("expected delivery sites {sites:?}, got {got:?}"));
            }
        }
        if let Some(name) = &expect.commissioner {
            let got = funding
                .commissioner
                .as_ref()
                .map(|c| c.name.as_ref())
                .unwrap_or("");
            if got != name {
                problems.push(format!("expected commissioner '{name}', got '{got}'"));
            }
        }
        problems
    }

    /// A BASIC answer and a FULL one must agree on everything BASIC shows.
    fn same_at_both_details(
        &self,
        outcome: &super::criteria::Facts,
        explained: &super::criteria::Facts,
        therapy: Therapy,
    ) -> Option<String> {
        let (a, b) = (
            self.eligibility(outcome, therapy),
            self.eligibility(explained, therapy),
        );
        let (f, g) = (
            self.funding(outcome, therapy),
            self.funding(explained, therapy),
        );
        // BASIC shows the status, route and route rule; the rest is compared so that a BASIC
        // decision recorded and replayed rests on the same findings as a FULL one.
        let same = a.status == b.status
            && a.missing == b.missing
            && a.mdt == b.mdt
            && f.route == g.route
            && f.next_if_refused == g.next_if_refused
            && f.missing == g.missing
            && f.route_id == g.route_id
            && f.mdt == g.mdt;
        (!same).then(|| {
            format!(
                "the BASIC and FULL answers differ: {:?} / {:?} ({}) against {:?} / {:?} ({}): {} / {}",
                a.status, f.route, f.route_id, b.status, g.route, g.route_id, b.summary, g.summary
            )
        })
    }
}

/// Where each id of the policy file is: sources, commissioners, MDTs, delivery sites,
/// registries and criteria, each by its position in the compiled policy.
struct Ids {
    sources: HashMap<String, usize>,
    commissioners: HashMap<String, usize>,
    mdts: HashMap<String, usize>,
    sites: HashMap<String, usize>,
    registries: HashMap<String, usize>,
    criteria: HashMap<String, usize>,
}

/// Compiles the policy file in the order its parts refer to each other: sources, grading,
/// commissioners, MDTs and sites, registries, criteria, then the routes and therapies that
/// name them all, and the example cases. Every problem is an issue with its line; the policy
/// is used only if there are none.
fn compile(l: &mut Loader, raw: RawPolicy, text: &str) -> Policy {
    let header = raw.policy;
    if header.version.get_ref().trim().is_empty() {
        l.issue(
            header.version.span().start,
            "policy version must not be empty",
        );
    }
    let period = l.period(
        Some(header.effective_from),
        header.effective_to,
        header.version.span().start,
    );
    let source_ids = l.index(&raw.sources, |s| &s.id, "source");
    let sources = compile_sources(raw.sources);
    let (grading, grading_sources) = compile_grading(l, &source_ids, raw.grading);
    let commissioner_ids = l.index(&raw.commissioners, |c| &c.id, "commissioner");
    let commissioners = compile_commissioners(l, &source_ids, raw.commissioners);
    let (mdts, mdt_ids) = compile_named(l, &source_ids, raw.mdts, "MDT");
    let (sites, site_ids) = compile_named(l, &source_ids, raw.sites, "delivery site");
    let registry_ids = l.index(&raw.registries, |r| &r.id, "registry");
    let registries = compile_registries(l, &source_ids, raw.registries);
    let criterion_ids = l.index(&raw.criteria, |c| &c.id, "criterion");
    let criteria = compile_criteria(l, &source_ids, &criterion_ids, &sources, raw.criteria);
    let ids = Ids {
        sources: source_ids,
        commissioners: commissioner_ids,
        mdts: mdt_ids,
        sites: site_ids,
        registries: registry_ids,
        criteria: criterion_ids,
    };

    let mdt_rules = selectors(l, &ids, raw.mdt_rules);
    let mdt_overrides = selectors(l, &ids, raw.mdt_overrides);
    let fallback_mdt = l.lookup(
        &ids.mdts,
        &header.fallback_mdt,
        "MDT (policy.fallback_mdt)",
        0,
    );
    let mut routes = Routes {
        ids: &ids,
        seen: HashSet::new(),
    };
    let mut common_routes = Vec::new();
    for r in raw.common_routes {
        let offset = r.span().start;
        let route = routes.compile(l, r.into_inner(), offset);
        if route.when.is_empty() {
            l.issue(
                offset,
                format!(
                    "common route '{}' needs conditions: it comes before every therapy's own routes",
                    route.id
                ),
            );
        }
        common_routes.push(route);
    }
    let mut therapies = TherapyPolicies::default();
    for t in raw.therapies {
        let offset = t.span().start;
        let therapy = compile_therapy(l, &mut routes, &criteria, t.into_inner(), offset);
        if therapies.contains_key(&therapy.therapy) {
            l.issue(
                offset,
                format!("therapy {} is defined twice", therapy.therapy),
            );
        }
        therapies.insert(therapy.therapy, therapy);
    }
    let cases = compile_cases(l, &ids.sources, raw.cases);

    Policy {
        version: header.version.into_inner(),
        title: header.title,
        period,
        file: l.file.to_string(),
        content_hash: format!("sha256:{:x}", Sha256::digest(text.as_bytes())),
        sources,
        grading,
        grading_sources,
        criteria,
        commissioners,
        mdts,
        sites,
        registries,
        mdt_rules,
        mdt_overrides,
        common_routes,
        fallback_mdt,
        therapies,
        cases,
    }
}

fn compile_sources(raw: Vec<Spanned<RawSource>>) -> Vec<Source> {
    raw.into_iter()
        .map(|s| {
            let s = s.into_inner();
            Source {
                id: s.id,
                document: s.document,
                section: s.section,
                published: s.published,
                url: s.url,
                evidence: s.evidence,
            }
        })
        .collect()
}

/// The grading cut-offs: percentages, and G2's below G3's.
fn compile_grading(
    l: &mut Loader,
    source_ids: &HashMap<String, usize>,
    raw: Spanned<GradingParameters>,
) -> (GradingParameters, (usize, usize)) {
    let offset = raw.span().start;
    let grading = raw.into_inner();
    let sources = (
        l.lookup(source_ids, &grading.source, "source", offset),
        l.lookup(source_ids, &grading.lung_source, "source", offset),
    );
    for (name, value) in [
        ("ki67_g2_from_percent", grading.ki67_g2_from_percent),
        ("ki67_g3_above_percent", grading.ki67_g3_above_percent),
    ] {
        if !(0.0..=100.0).contains(&value) {
            l.issue(offset, format!("{name} must be a percentage, got {value}"));
        }
    }
    if grading.ki67_g2_from_percent > grading.ki67_g3_above_percent
        || grading.mitoses_g2_from > grading.mitoses_g3_above
    {
        l.issue(offset, "G2 cut-offs must not be above G3 cut-offs");
    }
    (grading, sources)
}

/// Commissioners, each with at least one period and no two overlapping.
fn compile_commissioners(
    l: &mut Loader,
    source_ids: &HashMap<String, usize>,
    raw: Vec<Spanned<RawCommissioner>>,
) -> Vec<Commissioner> {
    let mut commissioners = Vec::new();
    for c in raw {
        let offset = c.span().start;
        let c = c.into_inner();
        let source = l.lookup(source_ids, &c.source, "source", offset);
        if c.periods.is_empty() {
            l.issue(
                offset,
                format!("commissioner '{}' needs at least one period", c.id),
            );
        }
        let mut periods = Vec::new();
        let mut spans = Vec::new();
        for p in c.periods {
            let offset = p.span().start;
            let p = p.into_inner();
            let period = l.period(p.effective_from, p.effective_to, offset);
            spans.push((period, offset));
            periods.push((period, p.name));
        }
        l.no_overlaps(&spans, &format!("commissioner '{}'", c.id));
        commissioners.push(Commissioner {
            id: c.id,
            source,
            periods,
        });
    }
    commissioners
}

/// MDTs or delivery sites: an id, a name and a source each.
fn compile_named(
    l: &mut Loader,
    source_ids: &HashMap<String, usize>,
    items: Vec<Spanned<RawNamed>>,
    what: &str,
) -> (Vec<Named>, HashMap<String, usize>) {
    let index = l.index(&items, |n| &n.id, what);
    let list = items
        .into_iter()
        .map(|n| {
            let offset = n.span().start;
            let n = n.into_inner();
            // Each MDT and site cites its source; the loader checks it resolves.
            l.lookup(source_ids, &n.source, "source", offset);
            Named {
                id: n.id,
                name: n.name,
            }
        })
        .collect();
    (list, index)
}

/// Registries, their periods not overlapping, a capacity only while open.
fn compile_registries(
    l: &mut Loader,
    source_ids: &HashMap<String, usize>,
    raw: Vec<Spanned<RawRegistry>>,
) -> Vec<Registry> {
    let mut registries = Vec::new();
    for r in raw {
        let offset = r.span().start;
        let r = r.into_inner();
        // Each registry cites its source; the loader checks it resolves.
        l.lookup(source_ids, &r.source, "source", offset);
        let mut periods = Vec::new();
        let mut spans = Vec::new();
        for p in r.periods {
            let offset = p.span().start;
            let p = p.into_inner();
            let period = l.period(p.effective_from, p.effective_to, offset);
            spans.push((period, offset));
            if p.capacity.is_some_and(|c| c < 0)
                || (p.capacity.is_some() && p.status != RegistryStatus::Open)
            {
                l.issue(
                    offset,
                    "capacity must be zero or more, and only an open registry has one",
                );
            }
            periods.push(RegistryPeriod {
                period,
                status: p.status,
                note: p.note,
                capacity: p.capacity,
            });
        }
        l.no_overlaps(&spans, &format!("registry '{}'", r.id));
        registries.push(Registry {
            id: r.id,
            name: r.name,
            periods,
        });
    }
    registries
}

/// Criteria: each check from the catalogue, a safety criterion with its severity and flag, a
/// criterion citing a source still to verify saying so; then each composite's members, which
/// must be defined above it, so composites can never loop.
fn compile_criteria(
    l: &mut Loader,
    source_ids: &HashMap<String, usize>,
    criterion_ids: &HashMap<String, usize>,
    sources: &[Source],
    raw: Vec<Spanned<RawCriterion>>,
) -> Vec<Criterion> {
    let mut criteria = Vec::new();
    let mut offsets = Vec::new();
    for c in raw {
        let offset = c.span().start;
        offsets.push(offset);
        let c = c.into_inner();
        let source = l.lookup(source_ids, &c.source, "source", offset);
        let check = match super::catalogue::compile(&c.check, &c.params) {
            Ok(check) => check,
            Err(reason) => {
                l.issue(offset, format!("criterion '{}': {reason}", c.id));
                Check::ProgressiveDisease
            }
        };
        if c.role == Role::Safety && (c.severity.is_none() || c.flag.is_none()) {
            l.issue(
                offset,
                format!(
                    "criterion '{}': a safety criterion needs a severity and a flag message",
                    c.id
                ),
            );
        }
        if sources
            .get(source)
            .is_some_and(|s| s.evidence == Evidence::ToVerify)
            && !c.to_verify
        {
            l.issue(
                offset,
                format!(
                    "criterion '{}': its source '{}' is tagged to_verify, so the criterion must say `to_verify = true` and be flagged in answers",
                    c.id, c.source
                ),
            );
        }
        let parameters = if c.params.is_empty() {
            String::new()
        } else {
            toml::Value::Table(c.params.clone()).to_string()
        };
        criteria.push(Criterion {
            id: c.id,
            description: c.description,
            role: c.role,
            check_name: c.check,
            parameters,
            parameter_table: c.params,
            check,
            source,
            severity: c.severity,
            flag: c.flag.unwrap_or_default(),
            to_verify: c.to_verify,
        });
    }
    for (i, (criterion, offset)) in criteria.iter_mut().zip(offsets.iter()).enumerate() {
        if let Check::Composite { any, names } = &criterion.check {
            let mut members = Vec::new();
            for name in names {
                match criterion_ids.get(name) {
                    Some(&m) if m < i => members.push(m),
                    Some(_) => l.issue(*offset, format!("criterion '{}': '{name}' must be defined above the composite that names it", criterion.id)),
                    None => l.issue(*offset, format!("criterion '{}': unknown criterion '{name}'", criterion.id)),
                }
            }
            criterion.check = if *any {
                Check::AnyOf { members }
            } else {
                Check::AllOf { members }
            };
        }
    }
    criteria
}

/// The criteria a list of ids names.
fn refs(l: &mut Loader, ids: &Ids, names: &[String], offset: usize) -> Vec<usize> {
    names
        .iter()
        .map(|id| l.lookup(&ids.criteria, id, "criterion", offset))
        .collect()
}

/// MDT selectors: when these criteria are met, this MDT.
fn selectors(l: &mut Loader, ids: &Ids, raw: Vec<Spanned<RawSelector>>) -> Vec<Selector> {
    raw.into_iter()
        .map(|s| {
            let offset = s.span().start;
            let s = s.into_inner();
            Selector {
                when: refs(l, ids, &s.when, offset),
                target: l.lookup(&ids.mdts, &s.mdt, "MDT", offset),
            }
        })
        .collect()
}

/// Funding routes, common and per therapy: every route id used once.
struct Routes<'a> {
    ids: &'a Ids,
    seen: HashSet<String>,
}

impl Routes<'_> {
    /// A route, its registry named exactly when it is an audit registry route.
    fn compile(&mut self, l: &mut Loader, r: RawRoute, offset: usize) -> Route {
        let ids = self.ids;
        if !self.seen.insert(r.id.clone()) {
            l.issue(offset, format!("duplicate route id '{}'", r.id));
        }
        let period = l.period(r.effective_from, r.effective_to, offset);
        let registry = r
            .registry
            .as_deref()
            .map(|id| l.lookup(&ids.registries, id, "registry", offset));
        if (r.route == RouteKind::AuditRegistry) != registry.is_some() {
            l.issue(
                offset,
                format!(
                    "route '{}': a registry is named exactly when the route is audit_registry",
                    r.id
                ),
            );
        }
        Route {
            when: refs(l, ids, &r.when, offset),
            commissioner: l.lookup(&ids.commissioners, &r.commissioner, "commissioner", offset),
            source: l.lookup(&ids.sources, &r.source, "source", offset),
            mdt: r
                .mdt
                .as_deref()
                .map(|m| l.lookup(&ids.mdts, m, "MDT", offset)),
            sites: r.sites.map(|s| {
                s.iter()
                    .map(|s| l.lookup(&ids.sites, s, "delivery site", offset))
                    .collect()
            }),
            id: r.id,
            nation: r.nation,
            kind: r.route,
            prior_approval: r.prior_approval,
            next_if_refused: r.next_if_refused,
            period,
            summary: r.summary,
            notes: r.notes,
            registry,
        }
    }
}

/// One therapy: eligibility with at least one required criterion, its MDT selectors, delivery
/// periods that do not overlap, and routes whose last for each nation catches every patient.
fn compile_therapy(
    l: &mut Loader,
    routes: &mut Routes,
    criteria: &[Criterion],
    t: RawTherapy,
    offset: usize,
) -> TherapyPolicy {
    let ids = routes.ids;
    let eligibility = refs(l, ids, &t.eligibility, offset);
    if !eligibility
        .iter()
        .any(|c| criteria.get(*c).is_some_and(|c| c.role == Role::Required))
    {
        l.issue(
            offset,
            format!(
                "therapy {}: eligibility needs at least one required criterion",
                t.therapy
            ),
        );
    }
    let mdt = selectors(l, ids, t.mdt);
    let mut delivery = Vec::new();
    for d in t.delivery {
        let offset = d.span().start;
        let d = d.into_inner();
        let when = refs(l, ids, &d.when, offset);
        let mut periods = Vec::new();
        let mut spans = Vec::new();
        for p in d.periods {
            let offset = p.span().start;
            let p = p.into_inner();
            let period = l.period(p.effective_from, p.effective_to, offset);
            spans.push((period, offset));
            let sites = p
                .sites
                .iter()
                .map(|s| l.lookup(&ids.sites, s, "delivery site", offset))
                .collect();
            let source = l.lookup(&ids.sources, &p.source, "source", offset);
            periods.push(DeliveryPeriod {
                period,
                sites,
                source,
                note: p.note,
            });
        }
        l.no_overlaps(&spans, &format!("therapy {} delivery", t.therapy));
        delivery.push(Delivery { when, periods });
    }
    let mut compiled: Vec<Route> = Vec::new();
    let mut last_offset: HashMap<Nation, (usize, bool)> = HashMap::new();
    for r in t.routes {
        let offset = r.span().start;
        let route = routes.compile(l, r.into_inner(), offset);
        let catch_all = route.when.is_empty() && route.period == Period::default();
        last_offset.insert(route.nation, (offset, catch_all));
        compiled.push(route);
    }
    for (nation, (offset, catch_all)) in last_offset {
        if !catch_all {
            l.issue(offset, format!("therapy {}: the last {nation} route must have no conditions and no dates, so every patient gets a route", t.therapy));
        }
    }
    TherapyPolicy {
        therapy: t.therapy,
        eligibility,
        mdt,
        delivery,
        routes: compiled,
        notes: t.notes,
    }
}

/// The policy's example cases, each citing a source; run after the policy compiles.
fn compile_cases(
    l: &mut Loader,
    source_ids: &HashMap<String, usize>,
    raw: Vec<Spanned<RawCase>>,
) -> Vec<Case> {
    let mut cases = Vec::new();
    for c in raw {
        let offset = c.span().start;
        let line = l.line(offset);
        let c = c.into_inner();
        l.lookup(source_ids, &c.source, "source", offset);
        let expectations = c
            .expect
            .into_iter()
            .map(|e| {
                let line = l.line(e.span().start);
                (line, e.into_inner())
            })
            .collect();
        cases.push(Case {
            name: c.name,
            line,
            as_of: c.as_of,
            patient: c.patient,
            expectations,
        });
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_policy_loads_and_its_cases_pass() {
        let policy = Policy::bundled().unwrap_or_else(|e| panic!("{e}"));
        assert!(policy.cases.len() >= 5);
        assert!(policy.content_hash.starts_with("sha256:"));
    }
}
