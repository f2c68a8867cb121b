//! DecisionLogService: read back what the service told whom and why, and replay it.

use prost::Message;
use tonic::{Request, Response, Status};

use super::citations::Citations;
use super::convert::{Bridge, Reader};
use super::funding::Registries;
use super::pages::{page, page_size, read_page_token};
use super::record::{EvaluationRequest, by_therapy, unavailable};
use super::request::patient_pseudonym;
use super::{AppState, convert, invalid_argument};
use crate::domain::Therapy;
use crate::engine::{Detail, Facts, Policy};
use crate::errors::{Reason, error, not_found};
use crate::pb;
use crate::pb::decision_log_service_server::DecisionLogService;
use crate::store::{Cursor, DecisionFilter, StoredDecision};

pub struct DecisionLogApi {
    state: AppState,
}

impl DecisionLogApi {
    pub fn new(state: AppState) -> Self {
        DecisionLogApi { state }
    }
}

fn decode(stored: &StoredDecision) -> Result<pb::DecisionRecord, Status> {
    pb::DecisionRecord::decode(stored.record.as_slice()).map_err(|e| {
        error(
            Reason::StoredRecordUnreadable,
            format!("stored decision {} cannot be read: {e}", stored.decision_id),
        )
    })
}

fn decision_id(r: &mut Reader, raw: &str) -> String {
    if uuid::Uuid::try_parse(raw).is_err() {
        r.violation("decision_id", "must be a decision id (UUID)");
    }
    raw.to_string()
}

/// google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z, with nanos
/// in 0 to 999,999,999 (the message's own definition).
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

/// A timestamp in milliseconds, or a violation when it is outside the proto's range.
fn millis(r: &mut Reader, field: &str, t: Option<&prost_types::Timestamp>) -> Option<i64> {
    let t = t?;
    if !TIMESTAMP_SECONDS.contains(&t.seconds) || !(0..1_000_000_000).contains(&t.nanos) {
        r.violation(
            field,
            "must be a valid timestamp: 0001-01-01 to 9999-12-31, nanos 0 to 999999999",
        );
        return None;
    }
    Some(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

async fn load(state: &AppState, id: &str) -> Result<pb::DecisionRecord, Status> {
    match state.log.store().decision(id).await.map_err(unavailable)? {
        Some(stored) => decode(&stored),
        None => Err(not_found(
            Reason::DecisionNotFound,
            "decision",
            "decisions",
            id,
        )),
    }
}

#[tonic::async_trait]
impl DecisionLogService for DecisionLogApi {
    async fn get_decision(
        &self,
        request: Request<pb::GetDecisionRequest>,
    ) -> Result<Response<pb::GetDecisionResponse>, Status> {
        let _caller = self.state.caller(&request)?;
        let req = request.into_inner();
        let mut r = Reader::default();
        let id = decision_id(&mut r, &req.decision_id);
        if !r.violations.is_empty() {
            return Err(invalid_argument(&r.violations));
        }
        Ok(Response::new(pb::GetDecisionResponse {
            decision: Some(load(&self.state, &id).await?),
        }))
    }

    async fn list_decisions(
        &self,
        request: Request<pb::ListDecisionsRequest>,
    ) -> Result<Response<pb::ListDecisionsResponse>, Status> {
        let _caller = self.state.caller(&request)?;
        let req = request.into_inner();
        let mut r = Reader::default();
        let pseudonym = patient_pseudonym(
            &mut r,
            &self.state.pseudonymiser,
            ("patient_nhs_number", &req.patient_nhs_number),
            ("patient_local_reference", &req.patient_local_reference),
        );
        let therapy: Option<Therapy> = r.enumeration("therapy", req.therapy);
        let status: Option<i32> = match pb::EligibilityStatus::try_from(req.eligibility_status) {
            Ok(pb::EligibilityStatus::Unspecified) => None,
            Ok(s) => Some(s as i32),
            Err(_) => {
                r.violation(
                    "eligibility_status",
                    format!("unknown enum value {}", req.eligibility_status),
                );
                None
            }
        };
        let route: Option<i32> = match pb::FundingRoute::try_from(req.funding_route) {
            Ok(pb::FundingRoute::Unspecified) => None,
            Ok(route) => Some(route as i32),
            Err(_) => {
                r.violation(
                    "funding_route",
                    format!("unknown enum value {}", req.funding_route),
                );
                None
            }
        };
        if therapy.is_none() {
            if status.is_some() {
                r.violation("eligibility_status", "needs a therapy to filter on");
            }
            if route.is_some() {
                r.violation("funding_route", "needs a therapy to filter on");
            }
        }
        let (start_ms, end_ms) = (
            millis(&mut r, "start_time", req.start_time.as_ref()),
            millis(&mut r, "end_time", req.end_time.as_ref()),
        );
        if let (Some(s), Some(e)) = (start_ms, end_ms)
            && s >= e
        {
            r.violation("end_time", "must be after start_time");
        }
        let limit = page_size(&mut r, req.page_size);
        let filter = DecisionFilter {
            patient_pseudonym: pseudonym,
            start_ms,
            end_ms,
            therapy: therapy.map(|t| t.to_proto()),
            status,
            route,
        };
        let filters = format!("{filter:?}");
        let cursor = read_page_token(&mut r, &req.page_token, &filters);
        if !r.violations.is_empty() {
            return Err(invalid_argument(&r.violations));
        }
        let rows = self
            .state
            .log
            .store()
            .list_decisions(&filter, cursor.as_ref(), limit + 1)
            .await
            .map_err(unavailable)?;
        let (rows, next_page_token) = page(rows, limit, &filters, |last| Cursor {
            at_ms: last.received_at_ms,
            id: last.decision_id.clone(),
        });
        let decisions = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::ListDecisionsResponse {
            decisions,
            next_page_token,
        }))
    }

    async fn replay_decision(
        &self,
        request: Request<pb::ReplayDecisionRequest>,
    ) -> Result<Response<pb::ReplayDecisionResponse>, Status> {
        let _caller = self.state.caller(&request)?;
        let req = request.into_inner();
        let mut r = Reader::default();
        let id = decision_id(&mut r, &req.decision_id);
        if !r.violations.is_empty() {
            return Err(invalid_argument(&r.violations));
        }
        let record = load(&self.state, &id).await?;
        let policy = self.state.policy.current();
        let as_of = record.as_of_date.as_ref();
        let therapies = match (&record.request, &record.response) {
            (
                Some(pb::decision_record::Request::EligibilityRequest(q)),
                Some(pb::decision_record::Response::EligibilityResponse(then)),
            ) => {
                let e = q.evaluation(&self.state, as_of)?;
                let facts = policy.facts(&e.patient, e.as_of, Detail::EXPLAINED);
                eligibility_replays(&policy, &facts, &then.therapies)
            }
            (
                Some(pb::decision_record::Request::FundingRequest(q)),
                Some(pb::decision_record::Response::FundingResponse(then)),
            ) => {
                let e = q.evaluation(&self.state, as_of)?;
                let mut facts = policy.facts(&e.patient, e.as_of, Detail::EXPLAINED);
                facts.registry_enrolments =
                    enrolled_now(&self.state, &policy, &record.patient_pseudonym).await?;
                funding_replays(&policy, &facts, &then.therapies)
            }
            (
                Some(pb::decision_record::Request::ScreeningRequest(q)),
                Some(pb::decision_record::Response::ScreeningResult(then)),
            ) => {
                let e = q.evaluation(&self.state, as_of)?;
                let mut facts = policy.facts(&e.patient, e.as_of, Detail::EXPLAINED);
                facts.registry_enrolments =
                    enrolled_now(&self.state, &policy, &record.patient_pseudonym).await?;
                let eligibility = then.eligibility.as_ref().map_or(&[][..], |r| &r.therapies);
                let funding = then.funding.as_ref().map_or(&[][..], |r| &r.therapies);
                screened_together(
                    &eligibility_replays(&policy, &facts, eligibility),
                    &funding_replays(&policy, &facts, funding),
                )
            }
            _ => {
                return Err(error(
                    Reason::StoredRecordUnreadable,
                    format!("stored decision {id} has no request and response to replay"),
                ));
            }
        };
        Ok(Response::new(pb::ReplayDecisionResponse {
            decision_id: record.decision_id,
            original_policy: record.policy,
            current_policy: Some(convert::policy_reference(&policy)),
            therapies,
        }))
    }
}

/// The registries the patient is enrolled in now: funding (and so screening) facts hold them.
async fn enrolled_now(
    state: &AppState,
    policy: &Policy,
    pseudonym: &str,
) -> Result<Vec<String>, Status> {
    let pseudonym = Some(pseudonym).filter(|p| !p.is_empty());
    Ok(Registries::consult(state, policy, pseudonym)
        .await?
        .enrolled)
}

/// Each therapy's eligibility then and now.
fn eligibility_replays(
    policy: &Policy,
    facts: &Facts,
    then: &[pb::TherapyEligibility],
) -> Vec<pb::TherapyReplay> {
    then.iter()
        .filter_map(|before| {
            let therapy = Therapy::from_proto(pb::Therapy::try_from(before.therapy).ok()?)?;
            let now = convert::eligibility(
                policy,
                policy.eligibility(facts, therapy),
                true,
                &mut Citations::new(policy, true),
            );
            let changed_criteria = changed(&before.criteria, &now.criteria);
            Some(pb::TherapyReplay {
                therapy: before.therapy,
                changed: before.status != now.status || !changed_criteria.is_empty(),
                original_status: before.status,
                current_status: now.status,
                explanation: now.summary,
                changed_criteria,
                ..Default::default()
            })
        })
        .collect()
}

/// Each therapy's funding then and now.
fn funding_replays(
    policy: &Policy,
    facts: &Facts,
    then: &[pb::TherapyFunding],
) -> Vec<pb::TherapyReplay> {
    then.iter()
        .filter_map(|before| {
            let therapy = Therapy::from_proto(pb::Therapy::try_from(before.therapy).ok()?)?;
            let now = convert::funding(
                policy,
                policy.funding(facts, therapy),
                true,
                &mut Citations::new(policy, true),
            );
            let changed_criteria = changed(&before.criteria, &now.criteria);
            Some(pb::TherapyReplay {
                therapy: before.therapy,
                changed: before.route != now.route
                    || before.route_id != now.route_id
                    || !changed_criteria.is_empty(),
                original_route: before.route,
                current_route: now.route,
                explanation: now.summary,
                changed_criteria,
                ..Default::default()
            })
        })
        .collect()
}

/// A screened patient's therapies: each therapy's eligibility and funding replays as one.
fn screened_together(
    eligibility: &[pb::TherapyReplay],
    funding: &[pb::TherapyReplay],
) -> Vec<pb::TherapyReplay> {
    let therapy = |t: &pb::TherapyReplay| t.therapy;
    by_therapy(eligibility, therapy, funding, therapy)
        .into_iter()
        .map(|(therapy, e, f)| {
            let mut both = e.cloned().unwrap_or(pb::TherapyReplay {
                therapy,
                ..Default::default()
            });
            if let Some(f) = f {
                both.changed |= f.changed;
                both.original_route = f.original_route;
                both.current_route = f.current_route;
                both.explanation = match e {
                    Some(_) => format!("{} {}", both.explanation, f.explanation),
                    None => f.explanation.clone(),
                };
                for id in &f.changed_criteria {
                    if !both.changed_criteria.contains(id) {
                        both.changed_criteria.push(id.clone());
                    }
                }
            }
            both
        })
        .collect()
}

/// Criteria whose outcome differs, or that one answer has and the other does not. An original
/// answer in the BASIC view carries no criteria, so only its status or route can be compared.
fn changed(before: &[pb::CriterionResult], now: &[pb::CriterionResult]) -> Vec<String> {
    if before.is_empty() {
        return Vec::new();
    }
    let mut ids: Vec<String> = Vec::new();
    for c in now {
        match before.iter().find(|b| b.criterion_id == c.criterion_id) {
            Some(b) if b.outcome == c.outcome => {}
            _ => ids.push(c.criterion_id.clone()),
        }
    }
    for b in before {
        if !now.iter().any(|c| c.criterion_id == b.criterion_id) {
            ids.push(b.criterion_id.clone());
        }
    }
    ids
}
