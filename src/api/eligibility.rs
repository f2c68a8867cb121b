//! EligibilityService.

use std::future::ready;

use futures_util::future::Either;
use tonic::{Request, Response, Status};

use super::citations::Citations;
use super::record::{self, Pending, RecordedAnswer};
use super::request::decision_id;
use super::{AppState, Evaluation, convert};
use crate::engine::{Facts, Policy};
use crate::pb;
use crate::pb::eligibility_service_server::EligibilityService;

pub struct EligibilityApi {
    state: AppState,
}

impl EligibilityApi {
    pub fn new(state: AppState) -> Self {
        EligibilityApi { state }
    }
}

#[tonic::async_trait]
impl EligibilityService for EligibilityApi {
    async fn evaluate_eligibility(
        &self,
        request: Request<pb::EvaluateEligibilityRequest>,
    ) -> Result<Response<pb::EvaluateEligibilityResponse>, Status> {
        let call = record::admit(&self.state, &request)?;
        let full =
            record::full_answer_place(&self.state, request.get_ref().view, call.deadline).await?;
        let validated = record::validate(&self.state, Box::new(request.into_inner())).await?;
        decide(&self.state, &call.caller, validated, Some(call.deadline))
            .await
            .map(|answer| record::held_until_sent(Response::new(answer), full))
    }
}

/// Decides eligibility for a validated request and records it. A retried request_id gets its
/// stored answer.
pub fn decide<'a>(
    state: &'a AppState,
    caller: &'a crate::auth::Caller,
    mut validated: record::Validated<pb::EvaluateEligibilityRequest>,
    deadline: Option<tokio::time::Instant>,
) -> Pending<'a, pb::EvaluateEligibilityResponse> {
    if let Some(prior) = validated.prior.take() {
        return Either::Left(ready(pb::EvaluateEligibilityResponse::from_record(*prior)));
    }
    let policy = state.policy.current();
    let e = &validated.evaluation;
    let response = answer(
        &policy,
        &policy.facts(&e.patient, e.as_of, e.detail()),
        e,
        decision_id(),
    );
    record(state, caller, validated, response, deadline)
}

/// The eligibility answer for the requested therapies, from the patient's facts (cohort
/// screening makes the facts once for eligibility and funding, under one decision id).
pub fn answer(
    policy: &Policy,
    facts: &Facts,
    e: &Evaluation,
    decision_id: String,
) -> pb::EvaluateEligibilityResponse {
    let mut cites = Citations::new(policy, e.inline_citations);
    let therapies = e
        .therapies
        .iter()
        .map(|t| convert::eligibility(policy, policy.eligibility(facts, *t), e.full, &mut cites))
        .collect();
    let (sources, statements) = cites.into_tables(policy);
    pb::EvaluateEligibilityResponse {
        decision_id,
        request_id: e.request_id.clone(),
        policy: Some(convert::policy_reference(policy)),
        as_of_date: Some(convert::date(e.as_of)),
        therapies,
        derived: e.full.then(|| convert::derived(facts)),
        sources,
        statements,
    }
}

/// Counts the answer in the metrics and records it (unless the decision log is off); returns
/// the stored answer instead when a concurrent retry of the same request_id won.
pub fn record<'a>(
    state: &'a AppState,
    caller: &'a crate::auth::Caller,
    validated: record::Validated<pb::EvaluateEligibilityRequest>,
    response: pb::EvaluateEligibilityResponse,
    deadline: Option<tokio::time::Instant>,
) -> Pending<'a, pb::EvaluateEligibilityResponse> {
    count(state, &response);
    record::record_answer(state, caller, validated, response, Vec::new(), deadline)
}

/// Counts each therapy's status in the metrics.
pub fn count(state: &AppState, response: &pb::EvaluateEligibilityResponse) {
    for t in &response.therapies {
        state.metrics.eligibility(t.therapy(), t.status());
    }
}
