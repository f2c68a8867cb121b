//! The decision engine: criteria in code, policy as data. Knows nothing of proto or tonic.

pub mod catalogue;
pub mod criteria;
pub mod evaluate;
pub mod finding;
pub mod grading;
pub mod policy;
#[cfg(test)]
mod properties;

pub use criteria::Facts;
pub use evaluate::{EligibilityAnswer, FundingAnswer};
pub use finding::Detail;
pub(crate) use finding::Outcome;
pub use policy::{Policy, PolicyError, PolicyIssue};
