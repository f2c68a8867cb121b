//! Test harness: the real server on 127.0.0.1:0, called through the client library, and a
//! patient builder so each test reads as a clinical case.
#![allow(dead_code)]

pub mod jwt;

use net_pathway::engine::Policy;
use net_pathway::google::r#type::Date;
use net_pathway::pb;
use net_pathway::store::pseudonym::Pseudonymiser;
use net_pathway::store::{DecisionLog, Store};
use net_pathway::{ActivePolicy, AppState};
use net_pathway_client::NetPathwayClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

#[allow(unused_imports)]
pub use pb::{EligibilityStatus as Status, FundingRoute as Route, Therapy};

/// The reason a failed call gives in its google.rpc.ErrorInfo, which every error carries with
/// the service's domain.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    let info = status
        .get_error_details()
        .error_info()
        .cloned()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "net-pathway.nhs.uk", "{status:?}");
    info.reason
}

/// A running server and a client connected to it; dropping it stops the server.
pub struct TestServer {
    pub client: NetPathwayClient,
    pub address: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub handle: tokio::task::JoinHandle<()>,
    /// The server's store, for checking what was written.
    pub store: Store,
    /// Holds the embedded database's directory for the server's lifetime.
    pub data_dir: tempfile::TempDir,
    /// The server's active policy, for tests that swap it.
    pub active: ActivePolicy,
    /// The server's call permits, for tests that fill them.
    pub in_flight: std::sync::Arc<tokio::sync::Semaphore>,
    /// The server's shared state (metrics, log, policy).
    pub state: AppState,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestServer {
    /// Asks the server to shut down gracefully (health goes NOT_SERVING, calls drain).
    pub fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Holds every calls-in-progress place (`--max-concurrent-calls`), so that every further
    /// call is shed until the returned permit is dropped.
    pub async fn hold_every_call_place(&self) -> tokio::sync::OwnedSemaphorePermit {
        let places = u32::try_from(self.state.limits.max_concurrent_calls).expect("places");
        std::sync::Arc::clone(&self.in_flight)
            .acquire_many_owned(places)
            .await
            .expect("every place")
    }

    /// How many calls of `method` the server has ended with `code` (`tonic::Code`'s name, as
    /// `netpathway_calls_total` labels it).
    pub fn calls_ended(&self, method: &str, code: &str) -> usize {
        let series = format!("netpathway_calls_total{{code=\"{code}\",method=\"{method}\"}} ");
        self.state
            .metrics_text(&Default::default())
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Starts the server with the bundled policy.
pub async fn server() -> TestServer {
    server_with(Policy::bundled().unwrap_or_else(|e| panic!("bundled policy: {e}"))).await
}

/// A fixed pseudonym key for tests, so a test can compute the pseudonym it expects.
pub const TEST_KEY: [u8; 32] = [7; 32];

pub async fn server_with(policy: Policy) -> TestServer {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let url = Store::default_url(data_dir.path());
    server_on(policy, &url, data_dir).await
}

/// Starts the server with `policy` on the database at `url`.
pub async fn server_on(policy: Policy, url: &str, data_dir: tempfile::TempDir) -> TestServer {
    start(
        policy,
        url,
        data_dir,
        net_pathway::auth::Authenticator::open(),
        test_limits(),
        true,
    )
    .await
}

/// The default limits, with health checking the database every 100 ms.
pub fn test_limits() -> net_pathway::config::Limits {
    net_pathway::config::Limits {
        health_check_interval: std::time::Duration::from_millis(100),
        ..Default::default()
    }
}

/// Starts the server with the bundled policy, these limits, and the decision log on or off.
pub async fn server_configured(
    limits: net_pathway::config::Limits,
    decision_log: bool,
) -> TestServer {
    bundled_in_temp_dir(
        net_pathway::auth::Authenticator::open(),
        limits,
        decision_log,
    )
    .await
}

/// Starts the server with the bundled policy, authenticating callers with `auth`. The
/// client it returns sends no credential.
pub async fn server_with_auth(auth: net_pathway::auth::Authenticator) -> TestServer {
    bundled_in_temp_dir(auth, test_limits(), true).await
}

async fn bundled_in_temp_dir(
    auth: net_pathway::auth::Authenticator,
    limits: net_pathway::config::Limits,
    decision_log: bool,
) -> TestServer {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let url = Store::default_url(data_dir.path());
    let policy = Policy::bundled().unwrap_or_else(|e| panic!("bundled policy: {e}"));
    start(policy, &url, data_dir, auth, limits, decision_log).await
}

/// `GET /metrics` on an admin listener, as Prometheus scrapes it.
pub async fn scrape_metrics(address: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect admin");
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// A port free on loopback now, for a test that starts the real binary.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// The service's binary: as cargo built it for these tests, or the one `NET_PATHWAY_BINARY`
/// names, so the same tests can be run against a release build (tools/soak does).
pub fn server_binary() -> std::ffi::OsString {
    std::env::var_os("NET_PATHWAY_BINARY")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_net-pathway").into())
}

/// The binary serving on loopback `port` with its data in `data_dir`, and `args` besides; its
/// log at `log` (RUST_LOG) to `stdout`, stderr discarded. The test stops it.
pub fn start_binary(
    port: u16,
    data_dir: &std::path::Path,
    args: &[&std::ffi::OsStr],
    log: &str,
    stdout: std::process::Stdio,
) -> std::process::Child {
    std::process::Command::new(server_binary())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", log)
        .stdout(stdout)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start net-pathway")
}

/// Sends `signal` (`TERM`, `HUP`, ...) to the binary, as an orchestrator or an operator does;
/// the test fails if it cannot be sent.
pub fn send_signal(server: &std::process::Child, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([format!("-{signal}"), server.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -{signal} {}", server.id());
}

/// Runs the binary to its end with `args`: its exit code (none if a signal ended it) and
/// everything it wrote, stdout then stderr.
pub fn run_to_exit<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (Option<i32>, String) {
    let out = std::process::Command::new(server_binary())
        .args(args)
        .output()
        .expect("run net-pathway");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A client of the binary listening on `port`, once its health answers SERVING (as a
/// Kubernetes readiness probe asks); the test fails if that takes more than 20 seconds.
pub async fn connect_when_serving(
    port: u16,
    options: net_pathway_client::ClientOptions,
) -> NetPathwayClient {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Ok(client) =
            NetPathwayClient::connect_with(format!("http://127.0.0.1:{port}"), options.clone())
                .await
        {
            let mut health = tonic_health::pb::health_client::HealthClient::new(client.channel());
            let status = health
                .check(HealthCheckRequest::default())
                .await
                .map(|r| r.into_inner().status());
            if matches!(status, Ok(ServingStatus::Serving)) {
                return client;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "net-pathway on port {port} was not serving within 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn start(
    policy: Policy,
    url: &str,
    data_dir: tempfile::TempDir,
    auth: net_pathway::auth::Authenticator,
    limits: net_pathway::config::Limits,
    decision_log: bool,
) -> TestServer {
    let store = Store::open(url)
        .await
        .unwrap_or_else(|e| panic!("store {url}: {e}"));
    let active = ActivePolicy::new(policy);
    let log = if decision_log {
        DecisionLog::start(store.clone())
            .await
            .expect("decision log writer")
    } else {
        DecisionLog::off(store.clone()).expect("decision log off")
    };
    let state = AppState::new(
        active.clone(),
        log,
        Pseudonymiser::new(&TEST_KEY).expect("test key"),
        limits,
    )
    .expect("app state")
    .with_auth(auth);
    let in_flight = std::sync::Arc::clone(state.admissions.places());
    let shared = state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let address = listener.local_addr().expect("local address");
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = net_pathway::server::serve_with_listener(listener, state, shutdown).await {
            panic!("server failed: {e}");
        }
    });
    // No retries: the tests see each answer exactly as the server gave it.
    let client = NetPathwayClient::builder(format!("http://{address}"))
        .retries(0)
        .connect()
        .await
        .expect("connect to test server");
    TestServer {
        client,
        address,
        stop: Some(stop),
        handle,
        store,
        data_dir,
        active,
        in_flight,
        state: shared,
    }
}

pub fn date(year: i32, month: i32, day: i32) -> Date {
    Date { year, month, day }
}

/// The Royal Free NET MDT's agreement of 14 March 2024, before the PRRT audit registry put new
/// inclusion on hold, for a non-GEP NET patient with this NHS number.
pub fn prior_agreement_before_the_hold(nhs_number: &str) -> pb::RecordPriorAgreementRequest {
    pb::RecordPriorAgreementRequest {
        registry_id: "non-gep-prrt-registry".into(),
        patient: Some(pb::RegistryPatient {
            nhs_number: nhs_number.into(),
            ..Default::default()
        }),
        reason: pb::EnrolmentReason::NonGepNet as i32,
        mdt_reference: "RF-NET-MDT 2024-03-14 #7".into(),
        decision_date: Some(date(2024, 3, 14)),
    }
}

/// Builds a `PatientProfile` in the clinic's words.
#[derive(Clone, Default)]
pub struct Patient(pub pb::PatientProfile);

macro_rules! part {
    ($self:ident . $part:ident) => {
        $self.0.$part.get_or_insert_with(Default::default)
    };
}

impl Patient {
    pub fn new() -> Self {
        Patient::default()
    }
    pub fn profile(&self) -> pb::PatientProfile {
        self.0.clone()
    }

    // Demographics
    pub fn england(mut self) -> Self {
        part!(self.demographics).nation = pb::Nation::England as i32;
        self
    }
    pub fn south_wales(mut self) -> Self {
        let d = part!(self.demographics);
        d.nation = pb::Nation::Wales as i32;
        d.welsh_region = pb::WelshRegion::SouthMid as i32;
        self
    }
    pub fn north_wales(mut self) -> Self {
        let d = part!(self.demographics);
        d.nation = pb::Nation::Wales as i32;
        d.welsh_region = pb::WelshRegion::North as i32;
        self
    }
    pub fn wales_region_unknown(mut self) -> Self {
        part!(self.demographics).nation = pb::Nation::Wales as i32;
        self
    }
    pub fn aged(mut self, years: i32) -> Self {
        part!(self.demographics).age_years = Some(years);
        self
    }
    pub fn born(mut self, dob: Date) -> Self {
        part!(self.demographics).date_of_birth = Some(dob);
        self
    }
    pub fn female(mut self) -> Self {
        part!(self.demographics).sex = pb::Sex::Female as i32;
        self
    }
    pub fn male(mut self) -> Self {
        part!(self.demographics).sex = pb::Sex::Male as i32;
        self
    }
    pub fn pregnant(mut self, yes: bool) -> Self {
        part!(self.demographics).pregnant = Some(yes);
        self
    }
    pub fn breastfeeding(mut self, yes: bool) -> Self {
        part!(self.demographics).breastfeeding = Some(yes);
        self
    }

    // Tumour
    pub fn primary(mut self, site: pb::PrimarySite) -> Self {
        part!(self.tumour).primary_site = site as i32;
        self
    }
    pub fn well_differentiated(mut self) -> Self {
        part!(self.tumour).differentiation = pb::Differentiation::Well as i32;
        self
    }
    pub fn poorly_differentiated(mut self) -> Self {
        part!(self.tumour).differentiation = pb::Differentiation::Poor as i32;
        self
    }
    pub fn stated_grade(mut self, grade: pb::WhoGrade) -> Self {
        part!(self.tumour).who_grade = grade as i32;
        self
    }
    pub fn ki67(mut self, percent: f64) -> Self {
        part!(self.tumour).ki67_percent = Some(percent);
        self
    }
    pub fn mitoses(mut self, per_2mm2: f64) -> Self {
        part!(self.tumour).mitoses_per_2mm2 = Some(per_2mm2);
        self
    }
    pub fn lung_class(mut self, class: pb::LungClassification) -> Self {
        part!(self.tumour).lung_classification = class as i32;
        self
    }

    // Extent and progression
    pub fn metastatic(mut self) -> Self {
        part!(self.extent).extent = pb::Extent::Metastatic as i32;
        self
    }
    pub fn localised_resectable(mut self) -> Self {
        let e = part!(self.extent);
        e.extent = pb::Extent::Localised as i32;
        e.resectable_with_curative_intent = Some(true);
        self
    }
    pub fn progressive(mut self, yes: bool) -> Self {
        part!(self.progression).progressive = Some(yes);
        self
    }

    // Imaging
    pub fn krenning(mut self, score: i32) -> Self {
        part!(self.imaging).krenning_score = Some(score);
        self
    }
    pub fn sstr_scan_on(mut self, when: Date) -> Self {
        let i = part!(self.imaging);
        i.sstr_modality = pb::SstrImagingModality::Ga68DotaPet as i32;
        i.sstr_scan_date = Some(when);
        self
    }
    pub fn fdg_positive_sstr_negative(mut self) -> Self {
        part!(self.imaging).fdg_positive_sstr_negative_lesion = Some(true);
        self
    }

    // History and fitness
    /// A completed earlier course: `cycles` administrations (a Lu-177 course is 4).
    pub fn previously_treated_with(mut self, therapy: Therapy, cycles: i32) -> Self {
        self.0.prior_treatments.push(pb::PriorTreatment {
            therapy: therapy as i32,
            cycles: Some(cycles),
            ..Default::default()
        });
        self
    }
    pub fn on_long_acting_ssa(mut self) -> Self {
        part!(self.medication).on_long_acting_ssa = Some(true);
        self
    }
    pub fn karnofsky(mut self, score: i32) -> Self {
        part!(self.fitness).karnofsky_performance_status = Some(score);
        self
    }
    pub fn ecog(mut self, score: i32) -> Self {
        part!(self.fitness).ecog_performance_status = Some(score);
        self
    }
    pub fn life_expectancy_months(mut self, months: i32) -> Self {
        part!(self.fitness).life_expectancy_months = Some(months);
        self
    }
    pub fn marrow_irradiated_percent(mut self, percent: f64) -> Self {
        part!(self.fitness).prior_marrow_radiotherapy_percent = Some(percent);
        self
    }
    pub fn cannot_follow_radiation_precautions(mut self) -> Self {
        part!(self.fitness).can_follow_radiation_precautions = Some(false);
        self
    }
    pub fn labs(mut self, set: impl FnOnce(&mut pb::LaboratoryResults)) -> Self {
        set(part!(self.labs));
        self
    }
}

/// The TA539 patient: an adult with a metastatic, progressive, well-differentiated G2
/// (Ki-67 8 %), SSTR-positive (Krenning 4) small-bowel NET. Nation is left to each test.
pub fn ta539_small_bowel() -> Patient {
    Patient::new()
        .aged(64)
        .primary(pb::PrimarySite::JejunumIleum)
        .well_differentiated()
        .ki67(8.0)
        .metastatic()
        .progressive(true)
        .krenning(4)
}

impl TestServer {
    pub async fn eligibility_on(
        &self,
        patient: &Patient,
        therapy: Therapy,
        as_of: Date,
    ) -> pb::TherapyEligibility {
        let response = self
            .client
            .evaluate_eligibility(pb::EvaluateEligibilityRequest {
                patient: Some(Box::new(patient.profile())),
                therapies: vec![therapy as i32],
                as_of_date: Some(as_of),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("EvaluateEligibility failed: {s:?}"));
        assert_eq!(
            response.therapies.len(),
            1,
            "one therapy asked, one answered"
        );
        response.therapies.into_iter().next().expect("one therapy")
    }

    pub async fn funding_on(
        &self,
        patient: &Patient,
        therapy: Therapy,
        as_of: Date,
    ) -> pb::TherapyFunding {
        let response = self
            .client
            .classify_funding(pb::ClassifyFundingRequest {
                patient: Some(Box::new(patient.profile())),
                therapies: vec![therapy as i32],
                as_of_date: Some(as_of),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("ClassifyFunding failed: {s:?}"));
        assert_eq!(
            response.therapies.len(),
            1,
            "one therapy asked, one answered"
        );
        response.therapies.into_iter().next().expect("one therapy")
    }
}

/// Flag ids on an eligibility answer.
pub fn flag_ids(answer: &pb::TherapyEligibility) -> Vec<&str> {
    answer
        .safety_flags
        .iter()
        .map(|f| f.flag_id.as_str())
        .collect()
}

/// Site ids on a funding answer.
pub fn site_ids(answer: &pb::TherapyFunding) -> Vec<&str> {
    answer
        .delivery_sites
        .iter()
        .map(|s| s.id.as_str())
        .collect()
}

/// A fresh, empty database URL per backend: an SQLite file in `dir`, and (when the PostgreSQL
/// server is reachable) a new database on it. Under CI=true an unreachable PostgreSQL fails the
/// test rather than skipping it.
pub async fn database_urls(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let mut urls = vec![(
        "sqlite",
        format!("sqlite://{}", dir.join("test.db").display()),
    )];
    if let Some(url) = fresh_postgres_database().await {
        urls.push(("postgres", url));
    }
    urls
}

/// Creates a new PostgreSQL database for one test and returns its URL.
pub async fn fresh_postgres_database() -> Option<String> {
    let admin = std::env::var("NETPATHWAY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let pool = match sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(&admin)
        .await
    {
        Ok(pool) => pool,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("PostgreSQL at {admin} is unreachable under CI: {e}")
        }
        Err(e) => {
            eprintln!(
                "PostgreSQL at {admin} is unreachable; the PostgreSQL leg is not run here: {e}"
            );
            return None;
        }
    };
    let name = format!("netpathway_test_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .expect("create test database");
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base)
        .to_string();
    Some(format!("{base}/{name}"))
}

/// Valid NHS numbers (modulus 11) for many patients.
pub fn nhs_numbers(count: usize) -> Vec<String> {
    (100_000_000u64..)
        .filter_map(|base| {
            let digits: Vec<u64> = base
                .to_string()
                .chars()
                .filter_map(|c| c.to_digit(10).map(u64::from))
                .collect();
            let sum: u64 = digits.iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
            match 11 - (sum % 11) {
                10 => None,
                11 => Some(format!("{base}0")),
                check => Some(format!("{base}{check}")),
            }
        })
        .take(count)
        .collect()
}

/// The patient's profile carrying `nhs_number`.
pub fn identified(patient: Patient, nhs_number: &str) -> pb::PatientProfile {
    let mut profile = patient.profile();
    profile.identifiers = Some(pb::PatientIdentifiers {
        nhs_number: nhs_number.into(),
        ..Default::default()
    });
    profile
}

/// The first google.rpc.PreconditionFailure violation of a refusal: its type and subject.
pub fn precondition_violation(status: &tonic::Status) -> (String, String) {
    use tonic_types::StatusExt;
    let failure = status
        .get_error_details()
        .precondition_failure()
        .cloned()
        .expect("PreconditionFailure");
    let first = failure.violations.first().expect("a violation");
    (first.r#type.clone(), first.subject.clone())
}
