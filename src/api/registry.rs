//! RegistryService: the prospective audit and registry for non-GEP NET and retreatment PRRT.
//! Whether new patients may enter is policy (the registry's dated state and capacity); who is
//! in it is data in the store.

use std::collections::HashMap;

use chrono::NaiveDate;
use tonic::{Request, Response, Status};
use tonic_types::ErrorDetails;

use super::convert::Reader;
use super::pages::{page, page_size, read_page_token};
use super::record::{now_ms, timestamp, unavailable};
use super::request::patient_pseudonym;
use super::{AppState, invalid_argument, today};
use crate::engine::policy::RegistryStatus;
use crate::errors::{Reason, error, error_with, not_found};
use crate::pb;
use crate::pb::registry_service_server::RegistryService;
use crate::store::{Cursor, EnrolOutcome, EnrolmentRow, Withdrawal};

pub struct RegistryApi {
    state: AppState,
}

impl RegistryApi {
    pub fn new(state: AppState) -> Self {
        RegistryApi { state }
    }
}

const MAX_MDT_REFERENCE: usize = 100;
const MAX_WITHDRAWAL_REASON: usize = 500;

fn enrolment(row: &EnrolmentRow) -> pb::Enrolment {
    pb::Enrolment {
        enrolment_id: row.enrolment_id.clone(),
        registry_id: row.registry_id.clone(),
        patient_pseudonym: row.patient_pseudonym.clone(),
        reason: row.reason,
        mdt_reference: row.mdt_reference.clone(),
        decision_date: NaiveDate::parse_from_str(&row.decision_date, "%Y-%m-%d")
            .ok()
            .map(super::convert::date),
        state: if row.active {
            pb::EnrolmentState::Active
        } else {
            pb::EnrolmentState::Withdrawn
        } as i32,
        agreed_before_hold: row.agreed_before_hold,
        create_time: Some(timestamp(row.created_at_ms)),
        withdraw_time: row.withdrawn_at_ms.map(timestamp),
        withdrawal_reason: row.withdrawal_reason.clone().unwrap_or_default(),
        enrolled_by: row.enrolled_by.clone(),
        withdrawn_by: row.withdrawn_by.clone().unwrap_or_default(),
    }
}

/// The fields EnrolPatient and RecordPriorAgreement share, as asked.
struct Asked<'a> {
    registry_id: &'a str,
    patient: Option<&'a pb::RegistryPatient>,
    reason: i32,
    mdt_reference: &'a str,
    decision_date: Option<&'a crate::google::r#type::Date>,
}

/// The shared fields of an EnrolPatientRequest or RecordPriorAgreementRequest, which name them
/// alike.
macro_rules! asked {
    ($req:ident) => {
        Asked {
            registry_id: &$req.registry_id,
            patient: $req.patient.as_ref(),
            reason: $req.reason,
            mdt_reference: &$req.mdt_reference,
            decision_date: $req.decision_date.as_ref(),
        }
    };
}

/// The fields enrolment and prior agreement share, validated.
struct EnrolmentFields {
    /// The policy snapshot the request was checked against; `registry` indexes it.
    policy: std::sync::Arc<crate::engine::Policy>,
    registry: usize,
    row: EnrolmentRow,
}

impl RegistryApi {
    /// Validates what was asked; the enrolment it makes names `caller` as who recorded it.
    fn read(
        &self,
        caller: &crate::auth::Caller,
        asked: Asked,
        agreed_before_hold: bool,
    ) -> Result<EnrolmentFields, Status> {
        let Asked {
            registry_id,
            patient,
            reason,
            mdt_reference,
            decision_date,
        } = asked;
        let policy = self.state.policy.current();
        let mut r = Reader::default();
        let registry = policy.registries.iter().position(|g| g.id == registry_id);
        if registry.is_none() {
            let known: Vec<&str> = policy.registries.iter().map(|g| g.id.as_str()).collect();
            r.violation(
                "registry_id",
                format!(
                    "unknown registry '{registry_id}'; the active policy has: {}",
                    known.join(", ")
                ),
            );
        }
        let pseudonym = match patient {
            Some(p) => {
                let pseudonym = patient_pseudonym(
                    &mut r,
                    &self.state.pseudonymiser,
                    ("patient.nhs_number", &p.nhs_number),
                    (
                        "patient.local_patient_reference",
                        &p.local_patient_reference,
                    ),
                );
                if p.nhs_number.is_empty() && p.local_patient_reference.is_empty() {
                    r.violation(
                        "patient",
                        "needs an NHS number or a local patient reference",
                    );
                }
                pseudonym
            }
            None => {
                r.violation("patient", "is required");
                None
            }
        };
        match pb::EnrolmentReason::try_from(reason) {
            Ok(pb::EnrolmentReason::Unspecified) => r.violation("reason", "is required"),
            Ok(_) => {}
            Err(_) => r.violation("reason", format!("unknown enum value {reason}")),
        }
        if mdt_reference.trim().is_empty() || mdt_reference.chars().count() > MAX_MDT_REFERENCE {
            r.violation(
                "mdt_reference",
                format!("is required, at most {MAX_MDT_REFERENCE} characters"),
            );
        }
        let decided = r.date("decision_date", decision_date);
        match decided {
            None if decision_date.is_none() => r.violation("decision_date", "is required"),
            Some(d) if d > today() => r.violation("decision_date", format!("{d} is in the future")),
            _ => {}
        }
        if !r.violations.is_empty() {
            return Err(invalid_argument(&r.violations));
        }
        Ok(EnrolmentFields {
            policy,
            registry: registry.unwrap_or(0),
            row: EnrolmentRow {
                enrolment_id: uuid::Uuid::now_v7().to_string(),
                registry_id: registry_id.to_string(),
                patient_pseudonym: pseudonym.unwrap_or_default(),
                reason,
                mdt_reference: mdt_reference.trim().to_string(),
                decision_date: decided.map(|d| d.to_string()).unwrap_or_default(),
                active: true,
                agreed_before_hold,
                created_at_ms: now_ms(),
                withdrawn_at_ms: None,
                withdrawal_reason: None,
                enrolled_by: caller.identity.clone(),
                withdrawn_by: None,
            },
        })
    }
}

/// FAILED_PRECONDITION whose google.rpc.PreconditionFailure names the registry (`subject`),
/// with the reason as its type.
fn precondition(reason: Reason, subject: &str, description: String) -> Status {
    let mut details = ErrorDetails::new();
    details.add_precondition_failure_violation(reason.as_str(), subject, description.clone());
    error_with(reason, description, details, HashMap::new())
}

/// The answer to an enrolment attempt; `subject` names the registry in a PreconditionFailure.
fn outcome(result: EnrolOutcome, subject: &str) -> Result<Response<pb::Enrolment>, Status> {
    match result {
        EnrolOutcome::Enrolled(row) => Ok(Response::new(enrolment(&row))),
        EnrolOutcome::AlreadyEnrolled(row) => Err(error(
            Reason::AlreadyEnrolled,
            format!(
                "the patient is already actively enrolled in {} (enrolment {})",
                row.registry_id, row.enrolment_id
            ),
        )),
        EnrolOutcome::CapacityReached { capacity, active } => Err(precondition(
            Reason::RegistryCapacity,
            subject,
            format!(
                "the registry's capacity of {capacity} new patients is reached ({active} actively enrolled)"
            ),
        )),
    }
}

#[tonic::async_trait]
impl RegistryService for RegistryApi {
    async fn enrol_patient(
        &self,
        request: Request<pb::EnrolPatientRequest>,
    ) -> Result<Response<pb::EnrolPatientResponse>, Status> {
        let caller = self.state.caller(&request)?;
        let req = request.into_inner();
        let asked = asked!(req);
        let fields = self.read(&caller, asked, false)?;
        let policy = &fields.policy;
        let registry = &policy.registries[fields.registry];
        let subject = format!("registries/{}", registry.id);
        let capacity = match registry.state_on(today()) {
            None => {
                return Err(precondition(
                    Reason::RegistryNotInEffect,
                    &subject,
                    format!(
                        "{} has no state today under policy {}",
                        registry.name, policy.version
                    ),
                ));
            }
            Some(state) if state.status == RegistryStatus::ClosedToNewPatients => {
                return Err(precondition(
                    Reason::RegistryClosed,
                    &subject,
                    format!(
                        "{} is closed to new patients under policy {} ({}): {}",
                        registry.name, policy.version, policy.content_hash, state.note
                    ),
                ));
            }
            Some(state) => state.capacity,
        };
        let result = self
            .state
            .log
            .store()
            .enrol(&fields.row, capacity)
            .await
            .map_err(unavailable)?;
        let enrolment = outcome(result, &subject)?;
        tracing::info!(enrolment_id = %enrolment.get_ref().enrolment_id, registry = %registry.id, "patient enrolled");
        Ok(Response::new(pb::EnrolPatientResponse {
            enrolment: Some(enrolment.into_inner()),
        }))
    }

    async fn record_prior_agreement(
        &self,
        request: Request<pb::RecordPriorAgreementRequest>,
    ) -> Result<Response<pb::RecordPriorAgreementResponse>, Status> {
        let caller = self.state.caller(&request)?;
        let req = request.into_inner();
        let asked = asked!(req);
        let fields = self.read(&caller, asked, true)?;
        // Patients agreed before the hold stay in the audit whatever its state: no capacity applies.
        let result = self
            .state
            .log
            .store()
            .enrol(&fields.row, None)
            .await
            .map_err(unavailable)?;
        let enrolment =
            outcome(result, &format!("registries/{}", fields.row.registry_id))?.into_inner();
        tracing::info!(enrolment_id = %enrolment.enrolment_id, registry = %enrolment.registry_id, "prior agreement recorded");
        Ok(Response::new(pb::RecordPriorAgreementResponse {
            enrolment: Some(enrolment),
        }))
    }

    async fn get_enrolment(
        &self,
        request: Request<pb::GetEnrolmentRequest>,
    ) -> Result<Response<pb::GetEnrolmentResponse>, Status> {
        let _caller = self.state.caller(&request)?;
        let id = request.into_inner().enrolment_id;
        if uuid::Uuid::try_parse(&id).is_err() {
            let mut r = Reader::default();
            r.violation("enrolment_id", "must be an enrolment id (UUID)");
            return Err(invalid_argument(&r.violations));
        }
        match self
            .state
            .log
            .store()
            .enrolment(&id)
            .await
            .map_err(unavailable)?
        {
            Some(row) => Ok(Response::new(pb::GetEnrolmentResponse {
                enrolment: Some(enrolment(&row)),
            })),
            None => Err(not_found(
                Reason::EnrolmentNotFound,
                "enrolment",
                "enrolments",
                &id,
            )),
        }
    }

    async fn list_enrolments(
        &self,
        request: Request<pb::ListEnrolmentsRequest>,
    ) -> Result<Response<pb::ListEnrolmentsResponse>, Status> {
        let _caller = self.state.caller(&request)?;
        let req = request.into_inner();
        let mut r = Reader::default();
        let limit = page_size(&mut r, req.page_size);
        let filters = format!("registry={}", req.registry_id);
        let cursor = read_page_token(&mut r, &req.page_token, &filters);
        if !r.violations.is_empty() {
            return Err(invalid_argument(&r.violations));
        }
        let registry = (!req.registry_id.is_empty()).then_some(req.registry_id.as_str());
        let rows = self
            .state
            .log
            .store()
            .list_enrolments(registry, cursor.as_ref(), limit + 1)
            .await
            .map_err(unavailable)?;
        let (rows, next_page_token) = page(rows, limit, &filters, |last| Cursor {
            at_ms: last.created_at_ms,
            id: last.enrolment_id.clone(),
        });
        Ok(Response::new(pb::ListEnrolmentsResponse {
            enrolments: rows.iter().map(enrolment).collect(),
            next_page_token,
        }))
    }

    async fn withdraw_enrolment(
        &self,
        request: Request<pb::WithdrawEnrolmentRequest>,
    ) -> Result<Response<pb::WithdrawEnrolmentResponse>, Status> {
        let caller = self.state.caller(&request)?;
        let req = request.into_inner();
        let mut r = Reader::default();
        if uuid::Uuid::try_parse(&req.enrolment_id).is_err() {
            r.violation("enrolment_id", "must be an enrolment id (UUID)");
        }
        if req.reason.trim().is_empty() || req.reason.chars().count() > MAX_WITHDRAWAL_REASON {
            r.violation(
                "reason",
                format!("is required, at most {MAX_WITHDRAWAL_REASON} characters"),
            );
        }
        if !r.violations.is_empty() {
            return Err(invalid_argument(&r.violations));
        }
        match self
            .state
            .log
            .store()
            .withdraw(
                &req.enrolment_id,
                req.reason.trim(),
                &caller.identity,
                now_ms(),
            )
            .await
            .map_err(unavailable)?
        {
            Withdrawal::Withdrawn(row) => Ok(Response::new(pb::WithdrawEnrolmentResponse {
                enrolment: Some(enrolment(&row)),
            })),
            // Also the answer to the loser of two concurrent withdrawals.
            Withdrawal::AlreadyWithdrawn(row) => Err(error(
                Reason::AlreadyWithdrawn,
                format!("enrolment {} is already withdrawn", row.enrolment_id),
            )),
            Withdrawal::NotFound => Err(not_found(
                Reason::EnrolmentNotFound,
                "enrolment",
                "enrolments",
                &req.enrolment_id,
            )),
        }
    }
}
