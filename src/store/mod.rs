//! Durable storage: the decision log and the PRRT audit registry, on embedded SQLite (the
//! default) or PostgreSQL (for several replicas), behind one interface. Migrations are embedded
//! and applied at start; a database whose schema is newer than this binary is refused.
//! Only keyed pseudonyms of patient identifiers are ever written.

mod group_commit;
pub mod pseudonym;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub(crate) use group_commit::CommitCounters;
pub use group_commit::DecisionLog;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(
        "the database schema is newer than this binary (migration {0} is unknown to it): run a newer net-pathway or restore a matching database"
    )]
    SchemaTooNew(i64),
    #[error("database migration failed: {0}")]
    Migration(MigrateError),
    #[error("unsupported database URL '{0}': use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("the decision log writer has stopped")]
    WriterStopped,
    #[error("the decision log writer thread could not start: {0}")]
    WriterThread(String),
    #[error("the decision log is switched off")]
    LogOff,
    #[error("the decision log's metrics could not be made: {0}")]
    Metrics(String),
    #[error("the decision log write failed: {0}")]
    Write(String),
    #[error("stored decision {0} cannot be decompressed: {1}")]
    Unreadable(String, String),
}

impl From<MigrateError> for StoreError {
    fn from(e: MigrateError) -> Self {
        match e {
            MigrateError::VersionMissing(v) => StoreError::SchemaTooNew(v),
            other => StoreError::Migration(other),
        }
    }
}

/// A decision to write.
#[derive(Debug, Clone)]
pub struct NewDecision {
    pub decision_id: String,
    pub request_id: Option<String>,
    /// Keyed hash of the request (identifiers replaced by their pseudonym), for idempotent retries.
    pub request_hash: String,
    pub kind: i32,
    pub received_at_ms: i64,
    pub caller: String,
    pub policy_version: String,
    pub policy_hash: String,
    pub as_of: String,
    pub patient_pseudonym: Option<String>,
    /// The encoded `netpathway.v1.DecisionRecord`, as it will be stored.
    pub record: Record,
    /// (therapy, eligibility status, funding route) per therapy answered; 0 where not applicable.
    pub outcomes: Vec<(i32, i32, i32)>,
}

/// How a record's bytes are stored (the `record_codec` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordCodec {
    /// The encoded protobuf as it is (records written before compression, and tests).
    Plain = 0,
    /// The encoded protobuf compressed with zstd (records written before the dictionary).
    Zstd = 1,
    /// The encoded protobuf compressed with zstd and `record-dictionary-1.zdict`.
    ZstdDictionary1 = 2,
}

/// A decision record's bytes as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub codec: RecordCodec,
    pub bytes: Vec<u8>,
}

/// zstd level 1: FULL records (tens of KB of repeated criterion text and citations) shrink about
/// eight-fold at a few hundred MB/s, so the log writes and fsyncs an eighth of the pages.
const ZSTD_LEVEL: i32 = 1;

/// A zstd dictionary of the policy's words and the records' shape, trained on synthetic patients
/// (tools/record-dictionary). With it a screened patient's record shrank from about 1.9 KB to
/// 0.4 KB (0.3 KB since BASIC answers carry no summary) and compressed about three times
/// faster. It never changes: records compressed with it need it to be read, so a new dictionary
/// comes as a new file and a new codec.
static RECORD_DICTIONARY_1: &[u8] = include_bytes!("record-dictionary-1.zdict");

/// The dictionary prepared once for compressing at ZSTD_LEVEL, shared by every thread.
fn record_encoder_dictionary() -> &'static zstd::dict::EncoderDictionary<'static> {
    static PREPARED: std::sync::OnceLock<zstd::dict::EncoderDictionary<'static>> =
        std::sync::OnceLock::new();
    PREPARED.get_or_init(|| zstd::dict::EncoderDictionary::copy(RECORD_DICTIONARY_1, ZSTD_LEVEL))
}

/// The dictionary prepared once for reading records.
fn record_decoder_dictionary() -> &'static zstd::dict::DecoderDictionary<'static> {
    static PREPARED: std::sync::OnceLock<zstd::dict::DecoderDictionary<'static>> =
        std::sync::OnceLock::new();
    PREPARED.get_or_init(|| zstd::dict::DecoderDictionary::copy(RECORD_DICTIONARY_1))
}

impl Record {
    /// Stored as given.
    pub fn plain(bytes: Vec<u8>) -> Record {
        Record {
            codec: RecordCodec::Plain,
            bytes,
        }
    }

    /// Compressed; stored plain in the unlikely case that compression fails.
    pub fn compressed(bytes: Vec<u8>) -> Record {
        let compressed = COMPRESSOR.with(|cell| {
            let mut slot = cell.try_borrow_mut().ok()?;
            if slot.is_none() {
                *slot =
                    zstd::bulk::Compressor::with_prepared_dictionary(record_encoder_dictionary())
                        .ok();
            }
            slot.as_mut()?.compress(&bytes).ok()
        });
        // zstd sizes its output for the worst case, about the input's size: a record waiting
        // for its group commit would otherwise hold three times the bytes it stores.
        let compressed = compressed.map(|mut c| {
            c.shrink_to_fit();
            c
        });
        match compressed {
            Some(compressed) => Record {
                codec: RecordCodec::ZstdDictionary1,
                bytes: compressed,
            },
            None => Record::plain(bytes),
        }
    }
}

thread_local! {
    /// One compression context per thread, reused: making a context per record (zstd zeroes
    /// its tables each time) took a quarter of the server's CPU with the decision log on.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// A stored record's encoded protobuf, decompressed.
fn unpack(decision_id: &str, codec: i32, bytes: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    const PLAIN: i32 = RecordCodec::Plain as i32;
    const ZSTD: i32 = RecordCodec::Zstd as i32;
    const ZSTD_DICTIONARY_1: i32 = RecordCodec::ZstdDictionary1 as i32;
    let unreadable = |why: String| StoreError::Unreadable(decision_id.to_string(), why);
    match codec {
        PLAIN => Ok(bytes),
        ZSTD => zstd::stream::decode_all(bytes.as_slice()).map_err(|e| unreadable(e.to_string())),
        ZSTD_DICTIONARY_1 => {
            use std::io::Read;
            let mut decoded = Vec::with_capacity(bytes.len().saturating_mul(8));
            zstd::stream::read::Decoder::with_prepared_dictionary(
                bytes.as_slice(),
                record_decoder_dictionary(),
            )
            .and_then(|mut decoder| decoder.read_to_end(&mut decoded))
            .map_err(|e| unreadable(e.to_string()))?;
            Ok(decoded)
        }
        other => Err(unreadable(format!("unknown record codec {other}"))),
    }
}

/// A stored decision.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDecision {
    pub decision_id: String,
    pub request_hash: String,
    pub kind: i32,
    pub received_at_ms: i64,
    pub record: Vec<u8>,
}

/// What writing one decision did.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    Written,
    /// The request_id already belongs to this stored decision; nothing was written.
    RequestIdTaken(StoredDecision),
}

/// Filters for listing decisions; `None` means any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecisionFilter {
    pub patient_pseudonym: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub therapy: Option<i32>,
    pub status: Option<i32>,
    pub route: Option<i32>,
}

/// Position after the last item of a page: newest first by time, then id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at_ms: i64,
    pub id: String,
}

/// A registry enrolment as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolmentRow {
    pub enrolment_id: String,
    pub registry_id: String,
    pub patient_pseudonym: String,
    pub reason: i32,
    pub mdt_reference: String,
    pub decision_date: String,
    pub active: bool,
    pub agreed_before_hold: bool,
    pub created_at_ms: i64,
    pub withdrawn_at_ms: Option<i64>,
    pub withdrawal_reason: Option<String>,
    /// The caller who enrolled the patient or recorded the prior agreement ('' for enrolments
    /// made before callers were recorded).
    pub enrolled_by: String,
    /// The caller who withdrew the enrolment.
    pub withdrawn_by: Option<String>,
}

/// What a withdrawal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Withdrawal {
    /// This call withdrew the enrolment, now as stored.
    Withdrawn(EnrolmentRow),
    /// It was withdrawn already (perhaps by a concurrent call), as stored.
    AlreadyWithdrawn(EnrolmentRow),
    NotFound,
}

/// What an enrolment attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrolOutcome {
    Enrolled(EnrolmentRow),
    /// The patient already has an active enrolment in this registry.
    AlreadyEnrolled(EnrolmentRow),
    /// The registry's capacity of new enrolments is reached.
    CapacityReached {
        capacity: i64,
        active: i64,
    },
}

/// Storage on either backend. Clones share the pool.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same code on whichever pool the store has; SQL uses `$N` placeholders, which both
/// backends accept.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

type DecisionRow = (String, String, i32, i64, Vec<u8>, i32);

/// The columns of a `DecisionRow`, in its order.
macro_rules! decision_columns {
    () => {
        "decision_id, request_hash, kind, received_at_ms, record, record_codec"
    };
}

/// Records per INSERT: 13 parameters each, 6,656 in all, far below either database's limit
/// (SQLite 32,766, PostgreSQL 65,535). The decision log's group commit takes at most this many,
/// so each is one statement and one round trip to SQLite's worker thread, which waits for a
/// core while the runtime's threads decide. At 128, a cohort screen's group commit of about 180
/// records took BEGIN, two INSERTs and COMMIT; at 512, five alternating h2load runs screened 8 %
/// more patients a second with the log on (2026-11-29), for up to 2 MB more at peak: the
/// writer's prepared full-size statement. A full chunk's shape is kept prepared; a shorter one
/// is parsed afresh.
pub(crate) const DECISIONS_PER_STATEMENT: usize = 512;

/// One value of an outcome token: two digits (every enum value fits, as a test checks), or
/// `__`, LIKE's two any-characters, where a filter leaves it open. Tokens and the patterns that
/// match them are written by this one function, so they cannot disagree.
fn push_two_digits(text: &mut String, value: Option<i32>) {
    match value {
        Some(value) => {
            // Digits pushed directly: formatting each value took 1.5 % of the server's CPU.
            let value = value.clamp(0, 99) as u8;
            text.push(char::from(b'0' + value / 10));
            text.push(char::from(b'0' + value % 10));
        }
        None => text.push_str("__"),
    }
}

/// A decision's outcomes as its `outcomes` column holds them (migration 0004): one `TT:SS:RR`
/// token per therapy answered, two digits each, separated and surrounded by spaces.
fn outcome_tokens(outcomes: &[(i32, i32, i32)]) -> String {
    let mut tokens = String::with_capacity(1 + outcomes.len() * 9);
    tokens.push(' ');
    for &(therapy, status, route) in outcomes {
        push_two_digits(&mut tokens, Some(therapy));
        tokens.push(':');
        push_two_digits(&mut tokens, Some(status));
        tokens.push(':');
        push_two_digits(&mut tokens, Some(route));
        tokens.push(' ');
    }
    tokens
}

/// The LIKE pattern matching decisions with an outcome for `therapy`, and with `status` and
/// `route` where given.
fn outcome_pattern(therapy: i32, status: Option<i32>, route: Option<i32>) -> String {
    let mut pattern = String::from("% ");
    push_two_digits(&mut pattern, Some(therapy));
    pattern.push(':');
    push_two_digits(&mut pattern, status);
    pattern.push(':');
    push_two_digits(&mut pattern, route);
    pattern.push_str(" %");
    pattern
}

fn decision(row: DecisionRow) -> Result<StoredDecision, StoreError> {
    let (decision_id, request_hash, kind, received_at_ms, record, codec) = row;
    let record = unpack(&decision_id, codec, record)?;
    Ok(StoredDecision {
        decision_id,
        request_hash,
        kind,
        received_at_ms,
        record,
    })
}

/// The enrolment columns, in `EnrolmentTuple` order, as a literal so queries stay `&'static str`.
macro_rules! select_enrolments {
    () => {
        "SELECT enrolment_id, registry_id, patient_pseudonym, reason, mdt_reference, decision_date, active, agreed_before_hold, created_at_ms, withdrawn_at_ms, withdrawal_reason, enrolled_by, withdrawn_by "
    };
}

type EnrolmentTuple = (
    String,
    String,
    String,
    i32,
    String,
    String,
    i32,
    i32,
    i64,
    Option<i64>,
    Option<String>,
    String,
    Option<String>,
);

fn enrolment(row: EnrolmentTuple) -> EnrolmentRow {
    let (
        enrolment_id,
        registry_id,
        patient_pseudonym,
        reason,
        mdt_reference,
        decision_date,
        active,
        prior,
        created,
        withdrawn,
        why,
        enrolled_by,
        withdrawn_by,
    ) = row;
    EnrolmentRow {
        enrolment_id,
        registry_id,
        patient_pseudonym,
        reason,
        mdt_reference,
        decision_date,
        active: active == 1,
        agreed_before_hold: prior == 1,
        created_at_ms: created,
        withdrawn_at_ms: withdrawn,
        withdrawal_reason: why,
        enrolled_by,
        withdrawn_by,
    }
}

/// Page size of a new embedded database, in bytes.
pub const SQLITE_PAGE_SIZE: u32 = 16_384;

/// Inserts `$batch` on `$connection` and reads back, for each decision not written because its
/// request_id was taken, the stored decision that holds it (`None`: written). Decisions are
/// never deleted, so that row is still there when read after the INSERT's own commit.
macro_rules! insert_decisions {
    ($connection:expr, $batch:expr) => {{
        let batch: &[NewDecision] = $batch;
        // A few multi-row statements per batch, not one per record and outcome: each
        // statement is a round trip to the database (or to SQLite's worker thread).
        let mut inserted = std::collections::HashSet::with_capacity(batch.len());
        for chunk in batch.chunks(DECISIONS_PER_STATEMENT) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO decisions (decision_id, request_id, request_hash, kind, received_at_ms, caller, policy_version, policy_hash, as_of, patient_pseudonym, record, record_codec, outcomes) ",
            );
            insert.push_values(chunk, |mut row, d| {
                row.push_bind(&d.decision_id)
                    .push_bind(&d.request_id)
                    .push_bind(&d.request_hash)
                    .push_bind(d.kind)
                    .push_bind(d.received_at_ms)
                    .push_bind(&d.caller)
                    .push_bind(&d.policy_version)
                    .push_bind(&d.policy_hash)
                    .push_bind(&d.as_of)
                    .push_bind(&d.patient_pseudonym)
                    .push_bind(&d.record.bytes)
                    .push_bind(d.record.codec as i32)
                    .push_bind(outcome_tokens(&d.outcomes));
            });
            insert.push(" ON CONFLICT (request_id) DO NOTHING RETURNING decision_id");
            // Only the full-size shape is kept prepared: caching every shorter one would
            // grow each connection by megabytes.
            let written: Vec<(String,)> = insert
                .build_query_as()
                .persistent(chunk.len() == DECISIONS_PER_STATEMENT)
                .fetch_all(&mut *$connection)
                .await?;
            inserted.extend(written.into_iter().map(|(id,)| id));
        }
        let mut outcomes: Vec<Option<DecisionRow>> = Vec::with_capacity(batch.len());
        for d in batch {
            if inserted.contains(&d.decision_id) {
                outcomes.push(None);
                continue;
            }
            // Only a record with a request_id can conflict: a retry raced its first call.
            let existing: DecisionRow = sqlx::query_as(concat!(
                "SELECT ",
                decision_columns!(),
                " FROM decisions WHERE request_id = $1"
            ))
            .bind(&d.request_id)
            .fetch_one(&mut *$connection)
            .await?;
            outcomes.push(Some(existing));
        }
        Ok::<_, sqlx::Error>(outcomes)
    }};
}

impl Store {
    /// Connects to `url` (`sqlite://PATH`, `postgres://...`), creating an SQLite file and its
    /// directory if missing, and applies the embedded migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let store = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                // WAL with synchronous=FULL: a committed decision survives a crash or power loss.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                // A new database's pages: 16 KB. Records of about 2 KB (before the record
                // dictionary) were just over half a 4 KB page, so 4 KB pages held one record each
                // and wrote half of each page empty (3.9 KB per record in all; 2.6 KB at 16 KB).
                // SQLite keeps an existing database's page size; the README says how to convert
                // one.
                .page_size(SQLITE_PAGE_SIZE)
                .busy_timeout(Duration::from_secs(10))
                // A full INSERT's RETURNING rows fit the worker's row channel, so SQLite's
                // thread never waits for the decision log writer in the middle of a statement.
                .row_buffer_size(DECISIONS_PER_STATEMENT)
                .foreign_keys(true);
            if let Some(dir) = options.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await?;
            SQLITE_MIGRATIONS.run(&pool).await?;
            Store::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            POSTGRES_MIGRATIONS.run(&pool).await?;
            Store::Postgres(pool)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        Ok(store)
    }

    /// The same database on one connection of its own, for the decision log's writer. Taking
    /// whichever pooled connection was free, the writer had filled every connection's page cache
    /// and kept its INSERT prepared on each: 20 MB more at peak under cohort screening.
    pub async fn single_connection(&self) -> Result<Store, StoreError> {
        Ok(match self {
            Store::Sqlite(pool) => Store::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    // A file connection cannot go stale: no ping before each group commit.
                    .test_before_acquire(false)
                    .connect_with((*pool.connect_options()).clone())
                    .await?,
            ),
            Store::Postgres(pool) => Store::Postgres(
                PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with((*pool.connect_options()).clone())
                    .await?,
            ),
        })
    }

    /// The default embedded database in `data_dir`.
    pub fn default_url(data_dir: &Path) -> String {
        format!("sqlite://{}", data_dir.join("net-pathway.db").display())
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Writes a batch of decisions atomically (group commit). A decision whose request_id is
    /// already stored is not written; its outcome names the stored decision.
    pub async fn write_decisions(
        &self,
        batch: &[NewDecision],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        on_pool!(self, |pool| {
            // A batch that fits one INSERT is that statement alone, which either database
            // commits atomically and (SQLite: WAL, synchronous=FULL) durably: one round trip to
            // the database, or to SQLite's worker thread, instead of three with BEGIN and COMMIT.
            if batch.len() <= DECISIONS_PER_STATEMENT {
                let mut connection = pool.acquire().await?;
                insert_decisions!(&mut *connection, batch)
            } else {
                let mut tx = pool.begin().await?;
                let outcomes = insert_decisions!(&mut *tx, batch)?;
                tx.commit().await?;
                Ok(outcomes)
            }
        })?
        .into_iter()
        .map(|row| match row {
            None => Ok(WriteOutcome::Written),
            Some(existing) => decision(existing).map(WriteOutcome::RequestIdTaken),
        })
        .collect()
    }

    pub async fn decision(&self, decision_id: &str) -> Result<Option<StoredDecision>, StoreError> {
        let row: Option<DecisionRow> = on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                decision_columns!(),
                " FROM decisions WHERE decision_id = $1"
            ))
            .bind(decision_id)
            .fetch_optional(pool)
            .await
        })?;
        row.map(decision).transpose()
    }

    pub async fn decision_by_request_id(
        &self,
        request_id: &str,
    ) -> Result<Option<StoredDecision>, StoreError> {
        let row: Option<DecisionRow> = on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                decision_columns!(),
                " FROM decisions WHERE request_id = $1"
            ))
            .bind(request_id)
            .fetch_optional(pool)
            .await
        })?;
        row.map(decision).transpose()
    }

    /// Decisions matching `filter`, newest first, after `cursor`, at most `limit`.
    pub async fn list_decisions(
        &self,
        filter: &DecisionFilter,
        cursor: Option<&Cursor>,
        limit: i64,
    ) -> Result<Vec<StoredDecision>, StoreError> {
        let (after_ms, after_id) =
            cursor.map_or((None, None), |c| (Some(c.at_ms), Some(c.id.clone())));
        // Status and route filter only within a therapy's outcome.
        let outcomes = filter
            .therapy
            .map(|therapy| outcome_pattern(therapy, filter.status, filter.route));
        let rows: Vec<DecisionRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT d.decision_id, d.request_hash, d.kind, d.received_at_ms, d.record, d.record_codec FROM decisions d \
                 WHERE ($1 IS NULL OR d.patient_pseudonym = $1) \
                   AND ($2 IS NULL OR d.received_at_ms >= $2) \
                   AND ($3 IS NULL OR d.received_at_ms < $3) \
                   AND ($4 IS NULL OR d.outcomes LIKE $4) \
                   AND ($5 IS NULL OR d.received_at_ms < $5 OR (d.received_at_ms = $5 AND d.decision_id < $6)) \
                 ORDER BY d.received_at_ms DESC, d.decision_id DESC LIMIT $7",
            )
            .bind(&filter.patient_pseudonym)
            .bind(filter.start_ms)
            .bind(filter.end_ms)
            .bind(&outcomes)
            .bind(after_ms)
            .bind(&after_id)
            .bind(limit)
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter().map(decision).collect()
    }

    /// Enrols a patient. With a capacity, the count of active new enrolments and the insert
    /// happen in one transaction that excludes concurrent enrolments to the same registry
    /// (SQLite: BEGIN IMMEDIATE; PostgreSQL: a row lock per registry), so the capacity holds
    /// across any number of concurrent calls and replicas.
    pub async fn enrol(
        &self,
        new: &EnrolmentRow,
        capacity: Option<i64>,
    ) -> Result<EnrolOutcome, StoreError> {
        macro_rules! enrol_in {
            ($tx:ident) => {{
                let existing: Option<EnrolmentTuple> = sqlx::query_as(
                    concat!(select_enrolments!(), "FROM enrolments WHERE registry_id = $1 AND patient_pseudonym = $2 AND active = 1"),
                )
                .bind(&new.registry_id)
                .bind(&new.patient_pseudonym)
                .fetch_optional(&mut *$tx)
                .await?;
                if let Some(row) = existing {
                    return Ok(EnrolOutcome::AlreadyEnrolled(enrolment(row)));
                }
                if let Some(capacity) = capacity {
                    let (active,): (i64,) = sqlx::query_as(
                        "SELECT COUNT(*) FROM enrolments WHERE registry_id = $1 AND active = 1 AND agreed_before_hold = 0",
                    )
                    .bind(&new.registry_id)
                    .fetch_one(&mut *$tx)
                    .await?;
                    if active >= capacity {
                        return Ok(EnrolOutcome::CapacityReached { capacity, active });
                    }
                }
                sqlx::query(
                    "INSERT INTO enrolments (enrolment_id, registry_id, patient_pseudonym, reason, mdt_reference, decision_date, active, agreed_before_hold, created_at_ms, enrolled_by) \
                     VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $9)",
                )
                .bind(&new.enrolment_id)
                .bind(&new.registry_id)
                .bind(&new.patient_pseudonym)
                .bind(new.reason)
                .bind(&new.mdt_reference)
                .bind(&new.decision_date)
                .bind(i32::from(new.agreed_before_hold))
                .bind(new.created_at_ms)
                .bind(&new.enrolled_by)
                .execute(&mut *$tx)
                .await?;
                $tx.commit().await?;
                Ok(EnrolOutcome::Enrolled(EnrolmentRow { active: true, ..new.clone() }))
            }};
        }
        match self {
            Store::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                enrol_in!(tx)
            }
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "INSERT INTO registry_locks (registry_id) VALUES ($1) ON CONFLICT DO NOTHING",
                )
                .bind(&new.registry_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "SELECT registry_id FROM registry_locks WHERE registry_id = $1 FOR UPDATE",
                )
                .bind(&new.registry_id)
                .execute(&mut *tx)
                .await?;
                enrol_in!(tx)
            }
        }
    }

    pub async fn enrolment(&self, enrolment_id: &str) -> Result<Option<EnrolmentRow>, StoreError> {
        let row: Option<EnrolmentTuple> = on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                select_enrolments!(),
                "FROM enrolments WHERE enrolment_id = $1"
            ))
            .bind(enrolment_id)
            .fetch_optional(pool)
            .await
        })?;
        Ok(row.map(enrolment))
    }

    /// Enrolments, newest first, optionally in one registry.
    pub async fn list_enrolments(
        &self,
        registry_id: Option<&str>,
        cursor: Option<&Cursor>,
        limit: i64,
    ) -> Result<Vec<EnrolmentRow>, StoreError> {
        let (after_ms, after_id) =
            cursor.map_or((None, None), |c| (Some(c.at_ms), Some(c.id.clone())));
        let rows: Vec<EnrolmentTuple> = on_pool!(self, |pool| {
            sqlx::query_as(
                concat!(select_enrolments!(), "FROM enrolments WHERE ($1 IS NULL OR registry_id = $1) \
                   AND ($2 IS NULL OR created_at_ms < $2 OR (created_at_ms = $2 AND enrolment_id < $3)) \
                 ORDER BY created_at_ms DESC, enrolment_id DESC LIMIT $4"),
            )
            .bind(registry_id)
            .bind(after_ms)
            .bind(&after_id)
            .bind(limit)
            .fetch_all(pool)
            .await
        })?;
        Ok(rows.into_iter().map(enrolment).collect())
    }

    /// Withdraws an active enrolment on behalf of caller `by`. Of concurrent withdrawals (from
    /// any replica) exactly one withdraws it; the others find it already withdrawn.
    pub async fn withdraw(
        &self,
        enrolment_id: &str,
        reason: &str,
        by: &str,
        at_ms: i64,
    ) -> Result<Withdrawal, StoreError> {
        let changed = on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE enrolments SET active = 0, withdrawn_at_ms = $2, withdrawal_reason = $3, withdrawn_by = $4 WHERE enrolment_id = $1 AND active = 1",
            )
            .bind(enrolment_id)
            .bind(at_ms)
            .bind(reason)
            .bind(by)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(match self.enrolment(enrolment_id).await? {
            None => Withdrawal::NotFound,
            Some(row) if changed > 0 => Withdrawal::Withdrawn(row),
            Some(row) => Withdrawal::AlreadyWithdrawn(row),
        })
    }

    /// The patient's active enrolments in every registry.
    pub async fn active_enrolments(
        &self,
        patient_pseudonym: &str,
    ) -> Result<Vec<EnrolmentRow>, StoreError> {
        let rows: Vec<EnrolmentTuple> = on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                select_enrolments!(),
                "FROM enrolments WHERE patient_pseudonym = $1 AND active = 1 ORDER BY created_at_ms"
            ))
            .bind(patient_pseudonym)
            .fetch_all(pool)
            .await
        })?;
        Ok(rows.into_iter().map(enrolment).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    /// The `outcomes` column's tokens are fixed-width only while every value fits two digits.
    #[test]
    fn every_therapy_status_and_route_fits_two_digits() {
        let fits = |valid: &dyn Fn(i32) -> bool| (0..1000).filter(|v| valid(*v)).all(|v| v < 100);
        assert!(fits(&|v| pb::Therapy::try_from(v).is_ok()));
        assert!(fits(&|v| pb::EligibilityStatus::try_from(v).is_ok()));
        assert!(fits(&|v| pb::FundingRoute::try_from(v).is_ok()));
    }

    /// Stored records need this exact dictionary to be read: it must never be retrained in place.
    #[test]
    fn the_record_dictionary_never_changes() {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(RECORD_DICTIONARY_1);
        assert_eq!(
            hex::encode(digest),
            "dcf14fa42c1d2ecab671d4c6883cf27ce9f56d166b25344ef5aa04a6f46fbfbb"
        );
        // zstd's dictionary magic, then the id each frame compressed with it names.
        assert_eq!(RECORD_DICTIONARY_1[..4], [0x37, 0xa4, 0x30, 0xec]);
        assert_eq!(RECORD_DICTIONARY_1[4..8], 0x2acf_3fe4u32.to_le_bytes());
    }

    /// A record as written today, and records written by earlier builds, read back unchanged.
    #[test]
    fn records_read_back_under_every_codec() {
        let summary = "Can be considered for everolimus: every required criterion is met. ";
        let bytes = summary.repeat(40).into_bytes();
        let record = Record::compressed(bytes.clone());
        assert_eq!(record.codec, RecordCodec::ZstdDictionary1);
        let plain_zstd = zstd::bulk::compress(&bytes, ZSTD_LEVEL).expect("compressed");
        assert!(
            record.bytes.len() < plain_zstd.len(),
            "the dictionary knows the policy's words"
        );
        let read = |codec: RecordCodec, stored: Vec<u8>| unpack("d-1", codec as i32, stored);
        assert_eq!(read(record.codec, record.bytes).expect("codec 2"), bytes);
        assert_eq!(read(RecordCodec::Zstd, plain_zstd).expect("codec 1"), bytes);
        assert_eq!(
            read(RecordCodec::Plain, bytes.clone()).expect("codec 0"),
            bytes
        );
        let unknown = unpack("d-1", 9, bytes).expect_err("no codec 9");
        assert!(
            unknown.to_string().contains("unknown record codec 9"),
            "{unknown}"
        );
    }

    #[test]
    fn tokens_and_patterns_are_fixed_width() {
        let tokens = outcome_tokens(&[(3, 1, 0), (4, 2, 0), (13, 0, 5)]);
        assert_eq!(tokens, " 03:01:00 04:02:00 13:00:05 ");
        assert_eq!(outcome_pattern(3, None, None), "% 03:__:__ %");
        assert_eq!(outcome_pattern(13, None, Some(5)), "% 13:__:05 %");
        assert_eq!(outcome_pattern(4, Some(2), Some(0)), "% 04:02:00 %");
    }
}
