//! Several replicas on one PostgreSQL, as deploy/ runs them: real server processes, each with
//! its own data directory but one database and one pseudonym key. A retried request_id is one
//! decision whichever replica it lands on, the registry's capacity holds across replicas, and
//! no decision any replica acknowledged is lost when one of them is killed.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use net_pathway::pb;
use net_pathway_client::{ClientOptions, NetPathwayClient};
use tonic::Code;

const REGISTRY: &str = "non-gep-prrt-registry";

/// The tests here run one at a time: each starts three debug servers on one PostgreSQL, and
/// together they would crowd two cores and the server's 100 connections.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

/// Replica processes on one database, sharing one pseudonym key; killed when dropped.
struct Replicas {
    processes: Vec<Child>,
    clients: Vec<NetPathwayClient>,
    _dirs: Vec<tempfile::TempDir>,
    _shared: tempfile::TempDir,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for process in &mut self.processes {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

/// `count` replicas on a fresh PostgreSQL database serving `policy` (the bundled one when
/// `None`), each SERVING before this returns; `None` when PostgreSQL is unreachable outside CI
/// (under CI=true `fresh_postgres_database` fails the test instead).
async fn replicas(count: usize, policy: Option<&str>) -> Option<Replicas> {
    let url = fresh_postgres_database().await?;
    let shared = tempfile::tempdir().expect("temp dir");
    let key = shared.path().join("pseudonym.key");
    std::fs::write(&key, [42u8; 32]).expect("write pseudonym key");
    let policy_file = policy.map(|text| {
        let path = shared.path().join("policy.toml");
        std::fs::write(&path, text).expect("write policy");
        path
    });
    let (mut processes, mut dirs, mut ports) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..count {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut args = vec![
            OsStr::new("--admin-listen"),
            OsStr::new("off"),
            OsStr::new("--database-url"),
            OsStr::new(&url),
            OsStr::new("--pseudonym-key-file"),
            key.as_os_str(),
        ];
        if let Some(file) = &policy_file {
            args.extend([OsStr::new("--policy"), file.as_os_str()]);
        }
        processes.push(start_binary(port, dir.path(), &args, "warn", Stdio::null()));
        dirs.push(dir);
        ports.push(port);
    }
    let mut clients = Vec::new();
    for port in ports {
        // No retries in the client: each worker fails over to the next replica itself.
        let once = ClientOptions {
            retries: 0,
            ..ClientOptions::default()
        };
        clients.push(connect_when_serving(port, once).await);
    }
    Some(Replicas {
        processes,
        clients,
        _dirs: dirs,
        _shared: shared,
    })
}

fn eligibility(request_id: &str, patient: pb::PatientProfile) -> pb::EvaluateEligibilityRequest {
    pb::EvaluateEligibilityRequest {
        request_id: request_id.into(),
        patient: Some(Box::new(patient)),
        as_of_date: Some(date(2026, 1, 15)),
        ..Default::default()
    }
}

/// Every decision in the log, read through one replica page by page. Pages of 20: a full
/// eligibility record for every therapy is about 100 KB, and the client decodes at most 4 MB.
async fn all_decisions(
    client: &NetPathwayClient,
    filter: pb::ListDecisionsRequest,
) -> Vec<pb::DecisionRecord> {
    let mut decisions = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_decisions(pb::ListDecisionsRequest {
                page_size: 20,
                page_token,
                ..filter.clone()
            })
            .await
            .expect("ListDecisions");
        decisions.extend(page.decisions);
        if page.next_page_token.is_empty() {
            return decisions;
        }
        page_token = page.next_page_token;
    }
}

async fn decisions_of(client: &NetPathwayClient, nhs_number: &str) -> Vec<pb::DecisionRecord> {
    all_decisions(
        client,
        pb::ListDecisionsRequest {
            patient_nhs_number: nhs_number.into(),
            ..Default::default()
        },
    )
    .await
}

/// A client whose call timed out or whose replica went away retries with the same request_id,
/// and the load balancer may send the retry to another replica: it must get the same decision,
/// and the log must hold it once, or the patient's record shows two decisions for one question.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_id_is_one_decision_across_replicas() {
    let _serial = one_at_a_time().await;
    let Some(replicas) = replicas(3, None).await else {
        return;
    };
    let [a, b, c] = &replicas.clients[..] else {
        unreachable!()
    };
    let nhs = nhs_numbers(2);

    // Answered by A, retried on B: the same answer, decision_id and all.
    let request_id = uuid::Uuid::now_v7().to_string();
    let request = eligibility(
        &request_id,
        identified(ta539_small_bowel().england(), &nhs[0]),
    );
    let first = a.evaluate_eligibility(request.clone()).await.expect("on A");
    let retry = b.evaluate_eligibility(request.clone()).await.expect("on B");
    assert_eq!(retry.decision_id, first.decision_id);
    assert_eq!(retry, first, "B returns A's stored answer as A returned it");

    // One decision in the log, whichever replica is asked.
    for replica in [a, b, c] {
        let listed = decisions_of(replica, &nhs[0]).await;
        assert_eq!(listed.len(), 1, "one decision for one request_id");
        assert_eq!(listed[0].decision_id, first.decision_id);
        assert_eq!(listed[0].request_id, request_id);
        let got = replica
            .get_decision(pb::GetDecisionRequest {
                decision_id: first.decision_id.clone(),
            })
            .await
            .expect("GetDecision")
            .decision
            .expect("record");
        assert_eq!(
            got.response,
            Some(pb::decision_record::Response::EligibilityResponse(
                first.clone()
            ))
        );
    }

    // The same request_id for a different request, on another replica: ALREADY_EXISTS naming
    // the decision that holds it (src/api/record.rs `same_request`), for a changed patient and
    // for a funding question alike.
    let mut changed = request.clone();
    changed
        .patient
        .as_mut()
        .expect("patient")
        .tumour
        .as_mut()
        .expect("tumour")
        .ki67_percent = Some(25.0);
    let refused = c
        .evaluate_eligibility(changed)
        .await
        .expect_err("different request");
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert!(
        refused.message().contains(&first.decision_id),
        "{refused:?}"
    );
    let refused = b
        .classify_funding(pb::ClassifyFundingRequest {
            request_id: request_id.clone(),
            patient: request.patient.clone(),
            as_of_date: request.as_of_date,
            ..Default::default()
        })
        .await
        .expect_err("a funding question under an eligibility request_id");
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert_eq!(
        decisions_of(a, &nhs[0]).await.len(),
        1,
        "refusals record nothing"
    );

    // Twelve copies of one funding request at once, four to each replica: one decision.
    let request_id = uuid::Uuid::now_v7().to_string();
    let request = pb::ClassifyFundingRequest {
        request_id: request_id.clone(),
        patient: Some(Box::new(identified(
            ta539_small_bowel().south_wales(),
            &nhs[1],
        ))),
        as_of_date: Some(date(2026, 1, 15)),
        ..Default::default()
    };
    let calls: Vec<_> = (0..12)
        .map(|i| {
            let (client, request) = (replicas.clients[i % 3].clone(), request.clone());
            tokio::spawn(async move { client.classify_funding(request).await })
        })
        .collect();
    let mut ids = HashSet::new();
    for call in calls {
        ids.insert(call.await.expect("task").expect("funding").decision_id);
    }
    assert_eq!(ids.len(), 1, "concurrent copies on three replicas: {ids:?}");
    let listed = decisions_of(c, &nhs[1]).await;
    assert_eq!(listed.len(), 1);
    assert!(ids.contains(&listed[0].decision_id));
}

/// The bundled policy with the PRRT audit registry open to `capacity` new patients (as
/// tests/it/registry.rs opens it), and without the policy case that expects it closed.
fn opened_policy(capacity: i64) -> String {
    let text = include_str!("../../policy/net-pathway.toml");
    let closed = "{ status = \"closed_to_new_patients\", note = \"Further inclusion beyond the patients already agreed is on hold; patients already agreed stay funded within it.\" },";
    let case = "route = \"audit_registry_closed\"\nmdt = \"royal-free-net-mdt\"";
    assert!(
        text.contains(closed) && text.contains(case),
        "the bundled policy changed"
    );
    text.replacen(
        closed,
        &format!("{{ status = \"open\", capacity = {capacity}, note = \"Open for a test.\" }},"),
        1,
    )
    .replacen(case, "mdt = \"royal-free-net-mdt\"", 1)
}

/// The registry funds only as many new patients as it can audit; enrolments arrive at every
/// replica, so the capacity must hold in the shared database, not per process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_capacity_is_exact_across_replicas() {
    const CAPACITY: usize = 10;
    let _serial = one_at_a_time().await;
    let Some(replicas) = replicas(3, Some(&opened_policy(CAPACITY as i64))).await else {
        return;
    };
    let calls: Vec<_> = nhs_numbers(200)
        .into_iter()
        .enumerate()
        .map(|(i, nhs)| {
            let client = replicas.clients[i % 3].clone();
            tokio::spawn(async move {
                let answer = client
                    .enrol_patient(pb::EnrolPatientRequest {
                        registry_id: REGISTRY.into(),
                        patient: Some(pb::RegistryPatient {
                            nhs_number: nhs,
                            ..Default::default()
                        }),
                        reason: pb::EnrolmentReason::NonGepNet as i32,
                        mdt_reference: "RF-NET-MDT".into(),
                        decision_date: Some(date(2026, 1, 15)),
                    })
                    .await;
                (i % 3, answer)
            })
        })
        .collect();
    let (mut enrolled, mut full, mut per_replica) = (HashSet::new(), 0, [0; 3]);
    for call in calls {
        match call.await.expect("task") {
            (replica, Ok(answer)) => {
                per_replica[replica] += 1;
                enrolled.insert(answer.enrolment.expect("enrolment").enrolment_id);
            }
            (_, Err(status)) if status.code() == Code::FailedPrecondition => {
                assert_eq!(
                    precondition_violation(&status),
                    ("REGISTRY_CAPACITY".into(), format!("registries/{REGISTRY}"))
                );
                full += 1;
            }
            (replica, Err(other)) => panic!("replica {replica}: {other:?}"),
        }
    }
    eprintln!("enrolled per replica: {per_replica:?}");
    assert_eq!((enrolled.len(), full), (CAPACITY, 200 - CAPACITY));

    // Every replica lists the same enrolments: exactly those answered, all active.
    for replica in &replicas.clients {
        let listed = replica
            .list_enrolments(pb::ListEnrolmentsRequest {
                registry_id: REGISTRY.into(),
                page_size: 500,
                ..Default::default()
            })
            .await
            .expect("ListEnrolments");
        assert!(listed.next_page_token.is_empty());
        let ids: HashSet<String> = listed
            .enrolments
            .iter()
            .map(|e| e.enrolment_id.clone())
            .collect();
        assert_eq!(ids, enrolled);
        assert!(
            listed
                .enrolments
                .iter()
                .all(|e| e.state() == pb::EnrolmentState::Active)
        );
    }
}

/// What each replica acknowledged: (decision_id, request_id).
type Acknowledged = Arc<Vec<Mutex<Vec<(String, String)>>>>;

fn count(acknowledged: &Acknowledged, replicas: &[usize]) -> usize {
    replicas
        .iter()
        .map(|&r| acknowledged[r].lock().expect("lock").len())
        .sum()
}

/// Waits until `done` holds; the test fails if that takes more than `within`.
async fn wait_until(what: &str, within: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A node dies with calls in flight: every answer a clinician was given, from whichever
/// replica, must be in the decision log, and the surviving replicas must keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_decision_is_lost_when_a_replica_is_killed() {
    const WORKERS: usize = 8;
    const KILLED: usize = 2;
    const SURVIVORS: [usize; 2] = [0, 1];
    let _serial = one_at_a_time().await;
    let Some(mut replicas) = replicas(3, None).await else {
        return;
    };
    let acknowledged: Acknowledged = Arc::new((0..3).map(|_| Mutex::default()).collect());
    let killed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    // Failed calls to the killed replica: whether they were sent after it was reaped, and how.
    let failures: Arc<Mutex<Vec<(bool, tonic::Status)>>> = Arc::default();

    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let clients = replicas.clients.clone();
            let (acknowledged, killed, stop, failures) = (
                Arc::clone(&acknowledged),
                Arc::clone(&killed),
                Arc::clone(&stop),
                Arc::clone(&failures),
            );
            tokio::spawn(async move {
                let mut patient = ta539_small_bowel().england().profile();
                patient.identifiers = Some(pb::PatientIdentifiers {
                    local_patient_reference: format!("MRN{w:04}"),
                    ..Default::default()
                });
                let mut turn = w;
                while !stop.load(Ordering::SeqCst) {
                    let request_id = uuid::Uuid::now_v7().to_string();
                    let request = eligibility(&request_id, patient.clone());
                    // Round robin; a failed call is retried, same request_id, on the next one.
                    loop {
                        let replica = turn % clients.len();
                        turn += 1;
                        let after_kill = killed.load(Ordering::SeqCst);
                        match clients[replica].evaluate_eligibility(request.clone()).await {
                            Ok(answer) => {
                                assert_eq!(answer.request_id, request_id);
                                acknowledged[replica]
                                    .lock()
                                    .expect("lock")
                                    .push((answer.decision_id, request_id));
                                break;
                            }
                            Err(status) if replica == KILLED => {
                                failures.lock().expect("lock").push((after_kill, status));
                            }
                            Err(status) => panic!("surviving replica {replica} failed: {status:?}"),
                        }
                    }
                }
            })
        })
        .collect();

    wait_until(
        "40 decisions from each replica",
        Duration::from_secs(30),
        || (0..3).all(|r| count(&acknowledged, &[r]) >= 40),
    )
    .await;
    send_signal(&replicas.processes[KILLED], "KILL");
    replicas.processes[KILLED].wait().expect("reaped");
    killed.store(true, Ordering::SeqCst);
    let survivors_at_kill = count(&acknowledged, &SURVIVORS);

    // The others carry on, and calls sent to the dead one fail.
    wait_until(
        "150 more decisions from the survivors",
        Duration::from_secs(30),
        || count(&acknowledged, &SURVIVORS) >= survivors_at_kill + 150,
    )
    .await;
    wait_until(
        "each worker's call to the dead replica failed",
        Duration::from_secs(10),
        || {
            failures
                .lock()
                .expect("lock")
                .iter()
                .filter(|(after, _)| *after)
                .count()
                >= WORKERS
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(15), worker)
            .await
            .expect("worker finished")
            .expect("worker");
    }

    // Sent after the kill: UNAVAILABLE (connection refused), or, when the client used the dead
    // connection before it noticed the close, UNKNOWN (a broken pipe) or CANCELLED ("connection
    // closed"). In flight at the kill: the connection is reset mid-call, which tonic reports as
    // UNKNOWN. Either way the call failed in the transport, never with an answer from the
    // server, and the worker retries the same request_id on a survivor.
    let failures = failures.lock().expect("lock").clone();
    let (mut sent_after, mut in_flight) = (0, Vec::new());
    for (after_kill, status) in &failures {
        if *after_kill {
            let transport = status.code() == Code::Unavailable
                || std::error::Error::source(status)
                    .is_some_and(|e| e.is::<tonic::transport::Error>());
            assert!(transport, "a call sent after the kill: {status:?}");
            sent_after += 1;
        } else {
            in_flight.push(format!("{:?}: {}", status.code(), status.message()));
        }
    }
    let all: Vec<(String, String)> = acknowledged
        .iter()
        .flat_map(|a| a.lock().expect("lock").clone())
        .collect();
    let by_killed = acknowledged[KILLED].lock().expect("lock").len();
    eprintln!(
        "{} decisions acknowledged ({by_killed} by the killed replica, {survivors_at_kill} by the \
         others before the kill); calls to the killed replica that failed: {sent_after} sent after \
         the kill, and in flight at the kill {in_flight:?}",
        all.len()
    );

    // Every acknowledged decision is in the log, as answered, read through a survivor.
    for (i, (decision_id, request_id)) in all.iter().enumerate() {
        let survivor = &replicas.clients[SURVIVORS[i % SURVIVORS.len()]];
        let record = survivor
            .get_decision(pb::GetDecisionRequest {
                decision_id: decision_id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("acknowledged decision {decision_id} is lost: {e:?}"))
            .decision
            .expect("record");
        assert_eq!(&record.request_id, request_id);
        match record.response {
            Some(pb::decision_record::Response::EligibilityResponse(r)) => {
                assert_eq!(&r.decision_id, decision_id);
            }
            other => panic!("decision {decision_id} has response {other:?}"),
        }
    }
    // And nothing else: each request_id acknowledged once is one decision, including the calls
    // the killed replica recorded but never answered, which were retried on a survivor.
    let ids: HashSet<&String> = all.iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids.len(),
        all.len(),
        "one decision_id per acknowledged request"
    );
    let logged = all_decisions(&replicas.clients[SURVIVORS[0]], Default::default()).await;
    assert_eq!(logged.len(), all.len(), "decisions in the log");
}
