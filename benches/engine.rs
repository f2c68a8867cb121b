//! The engine alone, without gRPC: one patient through every therapy (eligibility and funding),
//! one therapy decision, a cohort of varied patients, and loading the policy, at both details
//! (BASIC and FULL view). Allocations are counted by the `allocations` bench, apart, so that
//! counting them does not slow these timings.
//!
//! `cargo bench --bench engine`; figures and how to read them: docs/performance.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use net_pathway::domain::Therapy;
use net_pathway::engine::{Detail, Policy};

// The server's allocator, so the engine is timed as it runs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "shared/mod.rs"]
mod shared;
use shared::{bundled_policy, cohort, decide_all};

fn benches(c: &mut Criterion, policy: &Policy) {
    let patients = cohort(policy);
    let (patient, as_of) = patients
        .iter()
        .find(|(p, _)| p.tumour.ki67_percent.is_some())
        .cloned()
        .unwrap_or_else(|| patients[0].clone());

    for (view, detail) in [("basic", Detail::OUTCOME), ("full", Detail::EXPLAINED)] {
        let mut group = c.benchmark_group(format!("engine_{view}"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("patient_all_therapies_with_funding", |b| {
            b.iter(|| decide_all(policy, black_box(&patient), as_of, detail))
        });
        group.bench_function("therapy_decision_lu177", |b| {
            b.iter(|| {
                let facts = policy.facts(black_box(&patient), as_of, detail);
                black_box(policy.eligibility(&facts, Therapy::PrrtLu177Dotatate));
                black_box(policy.funding(&facts, Therapy::PrrtLu177Dotatate));
            })
        });
        group.throughput(Throughput::Elements(patients.len() as u64));
        group.bench_function("cohort_of_policy_cases", |b| {
            b.iter(|| {
                patients
                    .iter()
                    .map(|(p, d)| decide_all(policy, black_box(p), *d, detail))
                    .sum::<usize>()
            })
        });
        group.finish();
    }

    let mut group = c.benchmark_group("policy");
    group.sample_size(20);
    group.bench_function("load_validate_and_run_cases", |b| {
        b.iter(|| Policy::bundled().map(|p| p.cases.len()))
    });
    group.finish();
}

fn main() {
    let policy = bundled_policy();
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion, &policy);
    criterion.final_summary();
}
