//! gRPC adapters: decode and validate the request, call the engine, encode the answer.
//! `tonic::Status` is built only here; no clinical logic lives here.

mod citations;
#[cfg(test)]
mod clinical_cases;
pub mod convert;
mod decisions;
pub(crate) mod eligibility;
pub(crate) mod funding;
mod pages;
mod policy;
mod record;
mod registry;
mod request;
mod screening;
mod state;

pub use crate::errors::invalid_argument;
pub use decisions::DecisionLogApi;
pub use eligibility::EligibilityApi;
pub use funding::FundingApi;
pub use policy::PolicyApi;
pub use registry::RegistryApi;
pub use request::{Evaluation, read_evaluation, today};
pub use screening::ScreeningApi;
pub use state::{ActivePolicy, AppState};
