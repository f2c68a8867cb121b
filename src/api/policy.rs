//! PolicyService.

use tonic::{Request, Response, Status};

use super::convert::{self, Bridge, Reader};
use super::request::requested_therapies;
use super::{AppState, invalid_argument};
use crate::engine::policy::Severity;
use crate::pb;
use crate::pb::policy_service_server::PolicyService;

pub struct PolicyApi {
    state: AppState,
}

impl PolicyApi {
    pub fn new(state: AppState) -> Self {
        PolicyApi { state }
    }
}

#[tonic::async_trait]
impl PolicyService for PolicyApi {
    async fn get_active_policy(
        &self,
        request: Request<pb::GetActivePolicyRequest>,
    ) -> Result<Response<pb::GetActivePolicyResponse>, Status> {
        self.state.caller(&request)?;
        describe(&self.state, request.into_inner())
    }
}

fn describe(
    state: &AppState,
    req: pb::GetActivePolicyRequest,
) -> Result<Response<pb::GetActivePolicyResponse>, Status> {
    {
        let mut r = Reader::default();
        let therapies = requested_therapies(&mut r, &req.therapies);
        if !r.violations.is_empty() {
            return Err(invalid_argument(&r.violations));
        }
        let policy = state.policy.current();
        let (effective_from, effective_to) = convert::period(&policy.period);
        let described = therapies
            .iter()
            .map(|t| match policy.therapies.get(t) {
                None => pb::TherapyPolicy {
                    therapy: t.to_proto(),
                    decided: false,
                    ..Default::default()
                },
                Some(rules) => pb::TherapyPolicy {
                    therapy: t.to_proto(),
                    decided: true,
                    criteria: rules
                        .eligibility
                        .iter()
                        .map(|&c| {
                            let c = &policy.criteria[c];
                            #[allow(deprecated)] // `parameters`, kept beside parameter_values.
                            pb::CriterionDefinition {
                                criterion_id: c.id.clone(),
                                description: c.description.clone(),
                                role: convert::role(c.role) as i32,
                                check: c.check_name.clone(),
                                parameters: c.parameters.clone(),
                                source: Some(convert::source(&policy, c.source)),
                                severity: c
                                    .severity
                                    .map_or(0, |s: Severity| convert::severity(s) as i32),
                                parameter_values: (!c.parameter_table.is_empty())
                                    .then(|| structured(&c.parameter_table)),
                            }
                        })
                        .collect(),
                    routes: rules
                        .routes
                        .iter()
                        .map(|route| {
                            let (effective_from, effective_to) = convert::period(&route.period);
                            pb::RouteDefinition {
                                route_id: route.id.clone(),
                                nation: route.nation.to_proto(),
                                route: convert::route(policy.route_on(route, super::today()))
                                    as i32,
                                when_criteria: route
                                    .when
                                    .iter()
                                    .map(|&c| policy.criteria[c].id.clone())
                                    .collect(),
                                commissioner_id: policy.commissioners[route.commissioner]
                                    .id
                                    .clone(),
                                prior_approval: convert::prior_approval(route.prior_approval)
                                    as i32,
                                next_route_if_refused: convert::route(route.next_if_refused) as i32,
                                effective_from,
                                effective_to,
                                source: Some(convert::source(&policy, route.source)),
                                summary: route.summary.clone(),
                            }
                        })
                        .collect(),
                },
            })
            .collect();
        Ok(Response::new(pb::GetActivePolicyResponse {
            policy: Some(convert::policy_reference(&policy)),
            title: policy.title.clone(),
            effective_from,
            effective_to,
            therapies: described,
            sources: (0..policy.sources.len())
                .map(|i| convert::source(&policy, i))
                .collect(),
            example_case_count: i32::try_from(policy.cases.len()).unwrap_or(i32::MAX),
        }))
    }
}

/// A policy file's parameter table as google.protobuf.Struct: numbers, text, yes/no, lists
/// and tables as they are; a date or time as its TOML text.
fn structured(table: &toml::Table) -> prost_types::Struct {
    prost_types::Struct {
        fields: table
            .iter()
            .map(|(name, value)| (name.clone(), value_of(value)))
            .collect(),
    }
}

fn value_of(value: &toml::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        toml::Value::String(s) => Kind::StringValue(s.clone()),
        // Policy integers are thresholds and counts, far inside f64's exact range.
        toml::Value::Integer(i) => Kind::NumberValue(*i as f64),
        toml::Value::Float(f) => Kind::NumberValue(*f),
        toml::Value::Boolean(b) => Kind::BoolValue(*b),
        toml::Value::Datetime(d) => Kind::StringValue(d.to_string()),
        toml::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(value_of).collect(),
        }),
        toml::Value::Table(t) => Kind::StructValue(structured(t)),
    };
    prost_types::Value { kind: Some(kind) }
}
