//! FundingService.

use tonic::{Request, Response, Status};

use super::record::{self, unavailable};
use super::{AppState, convert, decision_id, in_time};
use crate::api::convert::Bridge;
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

const KIND: pb::DecisionKind = pb::DecisionKind::Funding;

#[tonic::async_trait]
impl FundingService for FundingApi {
    async fn classify_funding(
        &self,
        request: Request<pb::ClassifyFundingRequest>,
    ) -> Result<Response<pb::ClassifyFundingResponse>, Status> {
        observed!(self.state, "ClassifyFunding", request, {
            let record::Prepared {
                caller,
                permit: _permit,
                deadline,
                received_ms,
                evaluation: e,
                stored_request,
                fingerprint,
                prior,
            } = record::prepare(&self.state, request).await?;
            if let Some(prior) = prior {
                return stored_response(prior);
            }

            let policy = self.state.policy.current();
            let mut facts = policy.facts(&e.patient, e.as_of);
            // The audit registry is state the funding answer depends on: consult it for this patient.
            let mut observations = Vec::new();
            if let Some(pseudonym) = &e.pseudonym {
                let enrolments = self
                    .state
                    .log
                    .store()
                    .active_enrolments(pseudonym)
                    .await
                    .map_err(unavailable)?;
                for registry in &policy.registries {
                    let active = enrolments.iter().find(|en| en.registry_id == registry.id);
                    observations.push(pb::RegistryObservation {
                        registry_id: registry.id.clone(),
                        actively_enrolled: active.is_some(),
                        enrolment_id: active.map(|en| en.enrolment_id.clone()).unwrap_or_default(),
                    });
                }
                facts.registry_enrolments =
                    enrolments.into_iter().map(|en| en.registry_id).collect();
            }
            let answers: Vec<_> = e
                .therapies
                .iter()
                .map(|t| policy.funding(&facts, *t))
                .collect();
            let response = pb::ClassifyFundingResponse {
                decision_id: decision_id(),
                request_id: e.request_id.clone(),
                policy: Some(convert::policy_reference(&policy)),
                as_of_date: Some(convert::date(e.as_of)),
                therapies: answers
                    .iter()
                    .map(|a| convert::funding(&policy, a, e.full))
                    .collect(),
            };
            for t in &response.therapies {
                self.state.metrics.decision(
                    "funding",
                    t.therapy().as_str_name(),
                    t.route().as_str_name(),
                );
            }
            let outcomes = answers
                .iter()
                .map(|a| (a.therapy.to_proto(), 0, convert::route(a.route) as i32))
                .collect();
            let record = pb::DecisionRecord {
                decision_id: response.decision_id.clone(),
                request_id: e.request_id,
                received_time: Some(record::timestamp(received_ms)),
                caller: caller.identity,
                policy: response.policy.clone(),
                as_of_date: response.as_of_date,
                kind: KIND as i32,
                patient_pseudonym: e.pseudonym.unwrap_or_default(),
                request: Some(pb::decision_record::Request::FundingRequest(stored_request)),
                response: Some(pb::decision_record::Response::FundingResponse(
                    response.clone(),
                )),
                registry_observations: observations,
            };
            in_time(deadline)?;
            if let Some(winner) =
                record::persist(&self.state, &record, fingerprint, outcomes).await?
            {
                return stored_response(winner);
            }
            tracing::info!(
                decision_id = %response.decision_id,
                policy_version = %policy.version,
                therapies = response.therapies.len(),
                "funding classified and recorded"
            );
            Ok(Response::new(response))
        })
    }
}

fn stored_response(
    record: pb::DecisionRecord,
) -> Result<Response<pb::ClassifyFundingResponse>, Status> {
    match record.response {
        Some(pb::decision_record::Response::FundingResponse(r)) => Ok(Response::new(r)),
        _ => Err(Status::internal(format!(
            "stored decision {} has no funding response",
            record.decision_id
        ))),
    }
}
