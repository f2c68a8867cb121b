//! Heap allocations the engine makes per patient, at both details (BASIC and FULL view), over
//! the policy's example cohort. Counted apart from the timed benches: the counting allocator
//! would slow them.
//!
//! `cargo bench --bench allocations`

use std::alloc::System;
use std::hint::black_box;

use net_pathway::domain::Therapy;
use net_pathway::engine::{Detail, Policy};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[path = "shared/mod.rs"]
mod shared;
use shared::{bundled_policy, cohort, decide_all};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn report(policy: &Policy, detail: Detail, view: &str) {
    let patients = cohort(policy);
    let region = Region::new(GLOBAL);
    for (patient, as_of) in &patients {
        black_box(decide_all(policy, patient, *as_of, detail));
    }
    let stats = region.change();
    let n = patients.len().max(1);
    println!(
        "allocations, {view} view: {:.1} per patient ({:.1} per therapy decision), {:.0} bytes per patient, over {} patients x {} therapies x (eligibility + funding)",
        stats.allocations as f64 / n as f64,
        stats.allocations as f64 / (n * Therapy::ALL.len() * 2) as f64,
        stats.bytes_allocated as f64 / n as f64,
        n,
        Therapy::ALL.len()
    );
}

fn main() {
    let policy = bundled_policy();
    report(&policy, Detail::OUTCOME, "BASIC");
    report(&policy, Detail::EXPLAINED, "FULL");
}
