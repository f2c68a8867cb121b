//! Group commit for the decision log: concurrent calls hand their records to one writer thread,
//! which writes everything waiting in a single transaction and one flush, then answers each
//! caller. A call returns its decision only after its record is committed.

use tokio::sync::{mpsc, oneshot};

use super::{NewDecision, Store, StoreError, WriteOutcome};

/// Records waiting beyond this are written in the next group commit: each is one INSERT.
const MAX_BATCH: usize = super::DECISIONS_PER_STATEMENT;
/// Records queued before callers wait for room (back-pressure).
const QUEUE_DEPTH: usize = 4096;

type Reply = oneshot::Sender<Result<WriteOutcome, String>>;

/// The decision log writer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DecisionLog {
    /// `None` when the decision log is off.
    queue: Option<mpsc::Sender<(NewDecision, Reply)>>,
    store: Store,
}

impl DecisionLog {
    /// Starts the writer on a thread and a database connection of its own; the thread drives
    /// the current runtime's I/O and timers.
    pub async fn start(store: Store) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::channel(QUEUE_DEPTH);
        let runtime = tokio::runtime::Handle::current();
        let writer = store.single_connection().await?;
        // Not a task among the calls: behind dozens of them in the runtime's queue, the writer
        // waited 1 to 3 ms for its turn after each statement, and every caller waited with it.
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || runtime.block_on(write_batches(writer, jobs)))
            .map_err(|e| StoreError::WriterThread(e.to_string()))?;
        Ok(DecisionLog {
            queue: Some(queue),
            store,
        })
    }

    /// The decision log switched off (benchmarks, research): decisions are answered and not
    /// recorded, and request_id retries are not recognised. The store still serves the
    /// registry and reads of decisions recorded earlier.
    pub fn off(store: Store) -> Self {
        DecisionLog { queue: None, store }
    }

    /// Whether decisions are recorded.
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Decisions waiting for the writer now.
    pub fn queue_depth(&self) -> usize {
        self.queue
            .as_ref()
            .map_or(0, |q| QUEUE_DEPTH.saturating_sub(q.capacity()))
    }

    /// Writes one decision durably, sharing the transaction with whatever else is waiting.
    pub async fn record(&self, decision: NewDecision) -> Result<WriteOutcome, StoreError> {
        let queue = self.queue.as_ref().ok_or(StoreError::LogOff)?;
        let (reply, answer) = oneshot::channel();
        queue
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

async fn write_batches(store: Store, mut jobs: mpsc::Receiver<(NewDecision, Reply)>) {
    let mut batch: Vec<(NewDecision, Reply)> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (decisions, replies): (Vec<NewDecision>, Vec<Reply>) = batch.drain(..).unzip();
        match store.write_decisions(&decisions).await {
            Ok(outcomes) => {
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
