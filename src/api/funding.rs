//! FundingService.

use tonic::{Request, Response, Status};

use super::citations::Citations;
use super::record::{self, Pending, RecordedAnswer, unavailable};
use super::request::decision_id;
use super::{AppState, Evaluation, convert};
use crate::engine::{Facts, Policy};
use crate::pb;
use crate::pb::funding_service_server::FundingService;

pub struct FundingApi {
    state: AppState,
}

impl FundingApi {
    pub fn new(state: AppState) -> Self {
        FundingApi { state }
    }
}

#[tonic::async_trait]
impl FundingService for FundingApi {
    async fn classify_funding(
        &self,
        request: Request<pb::ClassifyFundingRequest>,
    ) -> Result<Response<pb::ClassifyFundingResponse>, Status> {
        let call = record::admit(&self.state, &request)?;
        let full =
            record::full_answer_place(&self.state, request.get_ref().view, call.deadline).await?;
        let validated = record::validate(&self.state, Box::new(request.into_inner())).await?;
        decide(&self.state, &call.caller, validated, Some(call.deadline))
            .await
            .map(|answer| record::held_until_sent(Response::new(answer), full))
    }
}

/// Classifies funding for a validated request and records it. A retried request_id gets its
/// stored answer.
pub async fn decide(
    state: &AppState,
    caller: &crate::auth::Caller,
    mut validated: record::Validated<pb::ClassifyFundingRequest>,
    deadline: Option<tokio::time::Instant>,
) -> Result<pb::ClassifyFundingResponse, Status> {
    if let Some(prior) = validated.prior.take() {
        return pb::ClassifyFundingResponse::from_record(*prior);
    }
    let policy = state.policy.current();
    let registries =
        Registries::consult(state, &policy, validated.evaluation.pseudonym.as_deref()).await?;
    let e = &validated.evaluation;
    let mut facts = policy.facts(&e.patient, e.as_of, e.detail());
    facts.registry_enrolments = registries.enrolled;
    let response = answer(&policy, &facts, e, decision_id());
    drop(facts);
    record(
        state,
        caller,
        validated,
        response,
        registries.observations,
        deadline,
    )
    .await
}

/// The audit registries a funding answer depends on, as the store says for this patient.
pub struct Registries {
    /// Registries (policy ids) the patient is actively enrolled in: the facts' enrolments.
    pub enrolled: Vec<String>,
    /// What was observed, per registry in the policy: stored with the decision.
    pub observations: Vec<pb::RegistryObservation>,
}

impl Registries {
    /// Consults the registry store for an identified patient; an anonymous patient has none.
    pub async fn consult(
        state: &AppState,
        policy: &Policy,
        pseudonym: Option<&str>,
    ) -> Result<Registries, Status> {
        let Some(pseudonym) = pseudonym else {
            return Ok(Registries {
                enrolled: Vec::new(),
                observations: Vec::new(),
            });
        };
        // Boxed: the store's future is large, and only identified patients wait on it.
        let enrolments = Box::pin(state.log.store().active_enrolments(pseudonym))
            .await
            .map_err(unavailable)?;
        let observations = policy
            .registries
            .iter()
            .map(|registry| {
                let active = enrolments.iter().find(|en| en.registry_id == registry.id);
                pb::RegistryObservation {
                    registry_id: registry.id.clone(),
                    actively_enrolled: active.is_some(),
                    enrolment_id: active.map(|en| en.enrolment_id.clone()).unwrap_or_default(),
                }
            })
            .collect();
        Ok(Registries {
            enrolled: enrolments.into_iter().map(|en| en.registry_id).collect(),
            observations,
        })
    }
}

/// The funding answer for the requested therapies, from the patient's facts (their registry
/// enrolments set from `Registries::consult`).
pub fn answer(
    policy: &Policy,
    facts: &Facts,
    e: &Evaluation,
    decision_id: String,
) -> pb::ClassifyFundingResponse {
    let mut cites = Citations::new(policy, e.inline_citations);
    let therapies = e
        .therapies
        .iter()
        .map(|t| convert::funding(policy, policy.funding(facts, *t), e.full, &mut cites))
        .collect();
    let (sources, statements) = cites.into_tables(policy);
    pb::ClassifyFundingResponse {
        decision_id,
        request_id: e.request_id.clone(),
        policy: Some(convert::policy_reference(policy)),
        as_of_date: Some(convert::date(e.as_of)),
        therapies,
        sources,
        statements,
    }
}

/// Counts the answer in the metrics and records it with the registry observations (unless the
/// decision log is off); returns the stored answer instead when a concurrent retry of the same
/// request_id won.
pub fn record<'a>(
    state: &'a AppState,
    caller: &'a crate::auth::Caller,
    validated: record::Validated<pb::ClassifyFundingRequest>,
    response: pb::ClassifyFundingResponse,
    observations: Vec<pb::RegistryObservation>,
    deadline: Option<tokio::time::Instant>,
) -> Pending<'a, pb::ClassifyFundingResponse> {
    count(state, &response);
    record::record_answer(state, caller, validated, response, observations, deadline)
}

/// Counts each therapy's funding route in the metrics.
pub fn count(state: &AppState, response: &pb::ClassifyFundingResponse) {
    for t in &response.therapies {
        state.metrics.funding(t.therapy(), t.route());
    }
}
