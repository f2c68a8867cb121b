//! Group commit for the decision log: concurrent calls hand their records to one writer thread,
//! which writes everything waiting in a single transaction and one flush, then answers each
//! caller. A call returns its decision only after its record is committed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{Counter, IntCounter};
use tokio::sync::{Notify, mpsc, oneshot};

use super::{NewDecision, Store, StoreError, WriteOutcome};

/// Records waiting beyond this are written in the next group commit: each is one INSERT.
const MAX_BATCH: usize = super::DECISIONS_PER_STATEMENT;
/// Records queued before callers wait for room (back-pressure).
const QUEUE_DEPTH: usize = 4096;

type Reply = oneshot::Sender<Result<WriteOutcome, String>>;

/// What the writer has committed, for the metrics: the writer's busy fraction is the rate of
/// `seconds`, so an operator sees when it, not the calls, sets the decision log's pace.
#[derive(Clone, Debug)]
pub(crate) struct CommitCounters {
    pub commits: IntCounter,
    pub records: IntCounter,
    pub seconds: Counter,
}

impl CommitCounters {
    fn new() -> Result<Self, StoreError> {
        let counters = || -> Result<Self, prometheus::Error> {
            Ok(CommitCounters {
                commits: IntCounter::new(
                    "netpathway_decision_log_commits_total",
                    "Group commits the decision log writer has made.",
                )?,
                records: IntCounter::new(
                    "netpathway_decision_log_committed_records_total",
                    "Decisions the decision log writer has committed (a retried request_id's is not written again).",
                )?,
                seconds: Counter::new(
                    "netpathway_decision_log_commit_seconds_total",
                    "Time the decision log writer has spent committing; its rate near 1 means the writer is saturated.",
                )?,
            })
        };
        counters().map_err(|e| StoreError::Metrics(e.to_string()))
    }
}

/// The decision log writer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DecisionLog {
    /// `None` when the decision log is off.
    writer: Option<Arc<Writer>>,
    store: Store,
    counters: CommitCounters,
}

/// The writer's queue, its thread, and the switch that closes the queue.
#[derive(Debug)]
struct Writer {
    queue: mpsc::Sender<(NewDecision, Reply)>,
    closing: Arc<Notify>,
    /// Taken by the first `close`.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl DecisionLog {
    /// Starts the writer on a thread and a database connection of its own; the thread drives
    /// the current runtime's I/O and timers.
    pub async fn start(store: Store) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::channel(QUEUE_DEPTH);
        let runtime = tokio::runtime::Handle::current();
        let writer = store.single_connection().await?;
        let counters = CommitCounters::new()?;
        let committed = counters.clone();
        let closing = Arc::new(Notify::new());
        let close_switch = Arc::clone(&closing);
        // Not a task among the calls: behind dozens of them in the runtime's queue, the writer
        // waited 1 to 3 ms for its turn after each statement, and every caller waited with it.
        let thread = std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || runtime.block_on(write_batches(writer, jobs, committed, &close_switch)))
            .map_err(|e| StoreError::WriterThread(e.to_string()))?;
        Ok(DecisionLog {
            writer: Some(Arc::new(Writer {
                queue,
                closing,
                thread: Mutex::new(Some(thread)),
            })),
            store,
            counters,
        })
    }

    /// At shutdown, once the calls have drained: takes no more records, commits every record
    /// already handed over (a caller that went away may have left one), and waits up to
    /// `within` for the writer to finish. False if it did not finish in time.
    pub async fn close(&self, within: Duration) -> bool {
        let Some(writer) = &self.writer else {
            return true;
        };
        writer.closing.notify_one();
        let thread = writer.thread.lock().ok().and_then(|mut slot| slot.take());
        let Some(thread) = thread else {
            return true;
        };
        let joined = tokio::task::spawn_blocking(move || thread.join());
        matches!(tokio::time::timeout(within, joined).await, Ok(Ok(Ok(()))))
    }

    /// The decision log switched off (benchmarks, research): decisions are answered and not
    /// recorded, and request_id retries are not recognised. The store still serves the
    /// registry and reads of decisions recorded earlier.
    pub fn off(store: Store) -> Result<Self, StoreError> {
        Ok(DecisionLog {
            writer: None,
            store,
            counters: CommitCounters::new()?,
        })
    }

    /// The writer's counters, for registering with the metrics (they stay at zero when off).
    pub(crate) fn counters(&self) -> &CommitCounters {
        &self.counters
    }

    /// Whether decisions are recorded.
    pub fn enabled(&self) -> bool {
        self.writer.is_some()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Decisions waiting for the writer now.
    pub fn queue_depth(&self) -> usize {
        self.writer
            .as_ref()
            .map_or(0, |w| QUEUE_DEPTH.saturating_sub(w.queue.capacity()))
    }

    /// Writes one decision durably, sharing the transaction with whatever else is waiting.
    pub async fn record(&self, decision: NewDecision) -> Result<WriteOutcome, StoreError> {
        let writer = self.writer.as_ref().ok_or(StoreError::LogOff)?;
        let (reply, answer) = oneshot::channel();
        writer
            .queue
            .send((decision, reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        match answer.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(message)) => Err(StoreError::Write(message)),
            Err(_) => Err(StoreError::WriterStopped),
        }
    }
}

async fn write_batches(
    store: Store,
    mut jobs: mpsc::Receiver<(NewDecision, Reply)>,
    counters: CommitCounters,
    closing: &Notify,
) {
    let mut batch: Vec<(NewDecision, Reply)> = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            biased;
            job = jobs.recv() => match job {
                Some(job) => job,
                // Closed and every record taken: the writer is done.
                None => break,
            },
            // Closing takes no new records; those already queued are still written.
            () = closing.notified() => {
                jobs.close();
                continue;
            }
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (decisions, replies): (Vec<NewDecision>, Vec<Reply>) = batch.drain(..).unzip();
        let started = std::time::Instant::now();
        let written = store.write_decisions(&decisions).await;
        counters.seconds.inc_by(started.elapsed().as_secs_f64());
        match written {
            Ok(outcomes) => {
                counters.commits.inc();
                let new = outcomes
                    .iter()
                    .filter(|o| matches!(o, WriteOutcome::Written));
                counters.records.inc_by(new.count() as u64);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = decisions.len(), "decision log write failed; the calls fail with UNAVAILABLE");
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }
}
