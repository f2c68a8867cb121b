//! The engine alone, without gRPC: one patient through every therapy (eligibility and funding),
//! one therapy decision, a cohort of varied patients, and loading the policy. Before the timed
//! runs it prints the heap allocations the engine makes per patient.
//!
//! `cargo bench --bench engine`; figures and how to read them: docs/performance.md.

use std::alloc::System;
use std::hint::black_box;

use criterion::{Criterion, Throughput};
use net_pathway::domain::{Patient, Therapy};
use net_pathway::engine::Policy;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Every eligibility and funding answer for one patient, as the unary RPCs compute them.
fn decide_all(policy: &Policy, patient: &Patient, as_of: chrono::NaiveDate) -> usize {
    let facts = policy.facts(patient, as_of);
    let mut answered = 0;
    for &therapy in Therapy::ALL {
        answered += black_box(policy.eligibility(&facts, therapy))
            .criteria
            .len();
        answered += black_box(policy.funding(&facts, therapy)).criteria.len();
    }
    answered
}

/// The policy's own example cases: varied sites, grades, nations and dates.
fn cohort(policy: &Policy) -> Vec<(Patient, chrono::NaiveDate)> {
    policy
        .cases
        .iter()
        .map(|c| (c.patient.clone(), c.as_of))
        .collect()
}

fn report_allocations(policy: &Policy) {
    let patients = cohort(policy);
    let region = Region::new(GLOBAL);
    for (patient, as_of) in &patients {
        black_box(decide_all(policy, patient, *as_of));
    }
    let stats = region.change();
    let n = patients.len().max(1);
    println!(
        "allocations: {:.1} per patient ({:.1} per therapy decision), {:.0} bytes per patient, over {} patients x {} therapies x (eligibility + funding)",
        stats.allocations as f64 / n as f64,
        stats.allocations as f64 / (n * Therapy::ALL.len() * 2) as f64,
        stats.bytes_allocated as f64 / n as f64,
        n,
        Therapy::ALL.len()
    );
}

fn benches(c: &mut Criterion, policy: &Policy) {
    let patients = cohort(policy);
    let (patient, as_of) = patients
        .iter()
        .find(|(p, _)| p.tumour.ki67_percent.is_some())
        .cloned()
        .unwrap_or_else(|| patients[0].clone());

    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    group.bench_function("patient_all_therapies_with_funding", |b| {
        b.iter(|| decide_all(policy, black_box(&patient), as_of))
    });
    group.bench_function("therapy_decision_lu177", |b| {
        b.iter(|| {
            let facts = policy.facts(black_box(&patient), as_of);
            black_box(policy.eligibility(&facts, Therapy::PrrtLu177Dotatate));
            black_box(policy.funding(&facts, Therapy::PrrtLu177Dotatate));
        })
    });
    group.throughput(Throughput::Elements(patients.len() as u64));
    group.bench_function("cohort_of_policy_cases", |b| {
        b.iter(|| {
            patients
                .iter()
                .map(|(p, d)| decide_all(policy, black_box(p), *d))
                .sum::<usize>()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("policy");
    group.sample_size(20);
    group.bench_function("load_validate_and_run_cases", |b| {
        b.iter(|| Policy::bundled().map(|p| p.cases.len()))
    });
    group.finish();
}

fn main() {
    let policy = match Policy::bundled() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("the bundled policy does not load: {e}");
            std::process::exit(2);
        }
    };
    report_allocations(&policy);
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion, &policy);
    criterion.final_summary();
}
