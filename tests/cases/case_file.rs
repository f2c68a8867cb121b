//! The clinical case file (`clinical-cases.toml`) as both of its runners read it: in-process in
//! `src/api/clinical_cases.rs` and over the socket in `tests/it/clinical_cases.rs`, each
//! including this module with `#[path]`. The including module provides `pb` and `Date`, its
//! crate's generated types. Each runner reads the parts it checks.
#![allow(dead_code)]

use prost_reflect::{DescriptorPool, DynamicMessage};
use serde::Deserialize;
use serde::de::DeserializeSeed;

use super::{Date, pb};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    pub case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub source: String,
    #[serde(default)]
    as_of: Option<[i32; 3]>,
    patient: toml::Value,
    pub expect: Vec<Expect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub therapy: String,
    pub status: Option<String>,
    pub route: Option<String>,
    #[serde(default)]
    pub missing: Option<Vec<String>>,
    #[serde(default)]
    pub funding_missing: Option<Vec<String>>,
    pub mdt: Option<String>,
    pub sites: Option<Vec<String>>,
    pub commissioner: Option<String>,
    pub route_id: Option<String>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub absent_flags: Vec<String>,
}

impl CaseFile {
    /// The cases in `clinical-cases.toml`; the test fails if the file does not read.
    pub fn read() -> CaseFile {
        toml::from_str(include_str!("clinical-cases.toml"))
            .unwrap_or_else(|e| panic!("clinical-cases.toml: {e}"))
    }
}

impl Case {
    /// The case's patient, read from the proto JSON mapping with the contract's descriptors.
    pub fn patient(&self, pool: &DescriptorPool) -> pb::PatientProfile {
        let read = || -> Result<pb::PatientProfile, String> {
            let descriptor = pool
                .get_message_by_name("netpathway.v1.PatientProfile")
                .ok_or("PatientProfile descriptor")?;
            let dynamic: DynamicMessage = descriptor
                .deserialize(self.patient.clone())
                .map_err(|e| e.to_string())?;
            dynamic.transcode_to().map_err(|e| e.to_string())
        };
        read().unwrap_or_else(|e| panic!("case '{}': patient: {e}", self.name))
    }

    /// The date the case is decided on, if not today.
    pub fn as_of(&self) -> Option<Date> {
        self.as_of
            .map(|[year, month, day]| Date { year, month, day })
    }
}

/// A contract enum value's name from the case file's short form: ("THERAPY", "sunitinib")
/// is "THERAPY_SUNITINIB".
pub fn enum_name(prefix: &str, short: &str) -> String {
    format!("{prefix}_{}", short.to_ascii_uppercase())
}
