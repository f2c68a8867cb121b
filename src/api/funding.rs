//! FundingService.

use tonic::{Request, Response, Status};

use super::{ActivePolicy, convert, decision_id, read_evaluation};
use crate::pb;
use crate::pb::funding_service_server::FundingService;

pub struct FundingApi {
    policy: ActivePolicy,
}

impl FundingApi {
    pub fn new(policy: ActivePolicy) -> Self {
        FundingApi { policy }
    }
}

#[tonic::async_trait]
impl FundingService for FundingApi {
    async fn classify_funding(
        &self,
        request: Request<pb::ClassifyFundingRequest>,
    ) -> Result<Response<pb::ClassifyFundingResponse>, Status> {
        let req = request.into_inner();
        let e = read_evaluation(
            &req.request_id,
            req.patient.as_ref(),
            &req.therapies,
            req.as_of_date.as_ref(),
            req.view,
        )?;
        let policy = self.policy.current();
        let facts = policy.facts(&e.patient, e.as_of);
        let therapies = e
            .therapies
            .iter()
            .map(|t| convert::funding(&policy, &policy.funding(&facts, *t), e.full))
            .collect();
        let response = pb::ClassifyFundingResponse {
            decision_id: decision_id(),
            request_id: e.request_id,
            policy: Some(convert::policy_reference(&policy)),
            as_of_date: Some(convert::date(e.as_of)),
            therapies,
        };
        tracing::info!(
            decision_id = %response.decision_id,
            policy_version = %policy.version,
            therapies = response.therapies.len(),
            "funding classified"
        );
        Ok(Response::new(response))
    }
}
