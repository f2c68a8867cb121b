//! EligibilityService.

use tonic::{Request, Response, Status};

use super::{ActivePolicy, convert, decision_id, read_evaluation};
use crate::pb;
use crate::pb::eligibility_service_server::EligibilityService;

pub struct EligibilityApi {
    policy: ActivePolicy,
}

impl EligibilityApi {
    pub fn new(policy: ActivePolicy) -> Self {
        EligibilityApi { policy }
    }
}

#[tonic::async_trait]
impl EligibilityService for EligibilityApi {
    async fn evaluate_eligibility(
        &self,
        request: Request<pb::EvaluateEligibilityRequest>,
    ) -> Result<Response<pb::EvaluateEligibilityResponse>, Status> {
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
            .map(|t| convert::eligibility(&policy, &policy.eligibility(&facts, *t), e.full))
            .collect();
        let response = pb::EvaluateEligibilityResponse {
            decision_id: decision_id(),
            request_id: e.request_id,
            policy: Some(convert::policy_reference(&policy)),
            as_of_date: Some(convert::date(e.as_of)),
            therapies,
            derived: e.full.then(|| convert::derived(&facts)),
        };
        tracing::info!(
            decision_id = %response.decision_id,
            policy_version = %policy.version,
            therapies = response.therapies.len(),
            "eligibility evaluated"
        );
        Ok(Response::new(response))
    }
}
