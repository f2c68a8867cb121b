//! Command line and `NETPATHWAY_*` environment configuration, in one typed struct.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::telemetry::LogFormat;

/// net-pathway: NET treatment eligibility and NHS funding decision support over gRPC.
#[derive(Debug, Parser)]
#[command(name = "net-pathway", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeConfig,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with policy files.
    Policy {
        #[command(subcommand)]
        action: PolicyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file and run its example cases. Exit 0: valid and every case passes;
    /// 2: the file cannot be read or is invalid; 3: valid but an example case fails.
    Check {
        /// The policy file (TOML).
        file: PathBuf,
    },
}

/// Settings for serving (the default command).
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on for gRPC.
    #[arg(long, env = "NETPATHWAY_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Policy file to serve; the bundled policy (policy/net-pathway.toml) when absent.
    #[arg(long, env = "NETPATHWAY_POLICY")]
    pub policy: Option<PathBuf>,
    /// How often to check the policy file for changes, in seconds (0: only on SIGHUP).
    /// Applies when --policy names a file.
    #[arg(long, env = "NETPATHWAY_POLICY_POLL_SECONDS", default_value_t = 5)]
    pub policy_poll_seconds: u64,
    /// Admin HTTP listener serving Prometheus metrics at /metrics; "off" to disable.
    #[arg(
        long,
        env = "NETPATHWAY_ADMIN_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    pub admin_listen: OptionalAddress,
    /// Extra plaintext listener serving only grpc.health.v1, for Kubernetes' native gRPC probes
    /// (which cannot use TLS); "off" to disable. Health name "liveness" stays SERVING while the
    /// process runs; "" follows the policy and the database (readiness).
    #[arg(long, env = "NETPATHWAY_HEALTH_LISTEN", default_value = "off")]
    pub health_listen: OptionalAddress,
    /// Log line format.
    #[arg(long, env = "NETPATHWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Database for the decision log and the audit registry: sqlite://PATH or postgres://...
    /// Default: an SQLite file `net-pathway.db` in the data directory.
    #[arg(long, env = "NETPATHWAY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Record every decision (`on`), or answer without recording (`off`: benchmarks and
    /// research only; request_id retries are then not recognised). Off is logged as a warning
    /// at start and shown as netpathway_decision_log_enabled 0.
    #[arg(long, env = "NETPATHWAY_DECISION_LOG", value_enum, default_value_t = Switch::On)]
    pub decision_log: Switch,
    /// Patients one ScreenCohort stream may send; the stream then ends with RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "NETPATHWAY_MAX_PATIENTS_PER_STREAM",
        default_value_t = 1_000_000
    )]
    pub max_patients_per_stream: u64,
    /// Patients one ScreenCohort stream may have being decided or awaiting their record at once:
    /// the stream's read-ahead, and so the size of the group commits it feeds.
    #[arg(long, env = "NETPATHWAY_SCREENING_WINDOW", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub screening_window: u32,
    /// Patients all ScreenCohort streams together may have in progress at once; further patients
    /// wait in their stream (HTTP/2 flow control), so memory stays bounded however many streams
    /// are open.
    #[arg(long, env = "NETPATHWAY_MAX_SCREENING_PATIENTS", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_screening_patients: u32,
    /// FULL-view unary answers (EvaluateEligibility, ClassifyFunding) being decided and recorded
    /// at once; further FULL calls wait their turn within their deadline. A FULL answer is some
    /// hundreds of KB while it is built and recorded, so this bounds that memory.
    #[arg(long, env = "NETPATHWAY_MAX_FULL_ANSWERS", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_full_answers: u32,
    /// Seconds a unary answer may wait with none of it taken by its caller (HTTP/2 flow
    /// control); it is then dropped, with its --max-full-answers place if it is FULL, and the
    /// call ends DEADLINE_EXCEEDED. What the call recorded stays recorded: a decision asked
    /// again with the same request_id gets the same answer.
    #[arg(long, env = "NETPATHWAY_UNREAD_ANSWER_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub unread_answer_seconds: u64,
    /// Directory for the embedded database and the generated pseudonym key.
    #[arg(long, env = "NETPATHWAY_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Key for patient pseudonyms (at least 32 bytes). Default: `pseudonym.key` in the data
    /// directory, generated on first start with owner-only permissions.
    #[arg(long, env = "NETPATHWAY_PSEUDONYM_KEY_FILE")]
    pub pseudonym_key_file: Option<PathBuf>,
    /// Largest request message accepted, in bytes (larger ones are refused with OUT_OF_RANGE
    /// from their length prefix, before they are read). A patient with the most prior
    /// treatments allowed is a few kilobytes.
    #[arg(long, env = "NETPATHWAY_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,
    /// HTTP/2 streams (calls) one connection may have open at once; the client waits or opens
    /// another connection for more.
    #[arg(long, env = "NETPATHWAY_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 flow-control window of one stream, in bytes: what a caller may send ahead of the
    /// server reading it, per call.
    #[arg(long, env = "NETPATHWAY_HTTP2_STREAM_WINDOW_BYTES", default_value_t = 32 * 1024,
          value_parser = clap::value_parser!(u32).range(16 * 1024..=16 * 1024 * 1024))]
    pub http2_stream_window_bytes: u32,
    /// HTTP/2 flow-control window of one connection, in bytes: what all its streams together
    /// may send ahead of the server reading them.
    #[arg(long, env = "NETPATHWAY_HTTP2_CONNECTION_WINDOW_BYTES", default_value_t = 8 * 1024 * 1024,
          value_parser = clap::value_parser!(u32).range(64 * 1024..=64 * 1024 * 1024))]
    pub http2_connection_window_bytes: u32,
    /// Largest block of request headers accepted, in bytes (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE).
    #[arg(long, env = "NETPATHWAY_HTTP2_MAX_HEADER_LIST_BYTES", default_value_t = 16 * 1024,
          value_parser = clap::value_parser!(u32).range(4 * 1024..=1024 * 1024))]
    pub http2_max_header_list_bytes: u32,
    /// Longest call deadline honoured, in seconds; calls with a longer or no deadline get this one.
    #[arg(long, env = "NETPATHWAY_MAX_DEADLINE_SECONDS", default_value_t = 30)]
    pub max_deadline_seconds: u64,
    /// Calls in progress at once before new ones are shed with RESOURCE_EXHAUSTED and RetryInfo.
    #[arg(long, env = "NETPATHWAY_MAX_CONCURRENT_CALLS", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_calls: u32,
    /// Retry delay, in milliseconds, that shed calls are given in google.rpc.RetryInfo.
    #[arg(long, env = "NETPATHWAY_RETRY_AFTER_MS", default_value_t = 100)]
    pub retry_after_ms: u64,
    /// HTTP/2 keepalive ping interval and timeout, in seconds.
    #[arg(long, env = "NETPATHWAY_HTTP2_KEEPALIVE_SECONDS", default_value_t = 30)]
    pub http2_keepalive_seconds: u64,
    /// Server certificate chain (PEM). With --tls-key, the server speaks only TLS.
    #[arg(long, env = "NETPATHWAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "NETPATHWAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to: turns on mutual TLS, and every caller
    /// must present a certificate from it.
    #[arg(long, env = "NETPATHWAY_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// JWKS file (JSON Web Key Set, public keys only) that bearer tokens are verified against,
    /// offline. Turns on bearer token authentication; re-read on SIGHUP and when the file
    /// changes (checked every --policy-poll-seconds), for key rotation.
    #[arg(long, env = "NETPATHWAY_JWKS_FILE", requires_all = ["jwt_issuer", "jwt_audience"])]
    pub jwks_file: Option<PathBuf>,
    /// Issuer (`iss`) every bearer token must carry.
    #[arg(long, env = "NETPATHWAY_JWT_ISSUER", requires = "jwks_file")]
    pub jwt_issuer: Option<String>,
    /// Audience (`aud`) every bearer token must name.
    #[arg(long, env = "NETPATHWAY_JWT_AUDIENCE", requires = "jwks_file")]
    pub jwt_audience: Option<String>,
    /// Clock skew tolerated on a token's `exp` and `nbf`, in seconds (at most 300).
    #[arg(long, env = "NETPATHWAY_JWT_LEEWAY_SECONDS", default_value_t = 60)]
    pub jwt_leeway_seconds: u64,
    /// Token claim holding the caller's roles (an array, or a space-separated string).
    #[arg(long, env = "NETPATHWAY_JWT_ROLES_CLAIM", default_value = "roles")]
    pub jwt_roles_claim: String,
    /// TOML file mapping client certificate names (subject CN or DNS SAN) to identities and
    /// roles, for callers authenticated by mutual TLS. Needs --tls-client-ca.
    #[arg(long, env = "NETPATHWAY_CLIENT_IDENTITIES", requires = "tls_client_ca")]
    pub client_identities: Option<PathBuf>,
    /// Accept listening on a non-loopback address without TLS.
    #[arg(long, env = "NETPATHWAY_ALLOW_PLAINTEXT")]
    pub allow_plaintext: bool,
    /// Accept listening on a non-loopback address without caller authentication (neither
    /// --jwks-file nor --client-identities).
    #[arg(long, env = "NETPATHWAY_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
    /// How often health checks the database, in seconds (NOT_SERVING while it does not answer).
    #[arg(long, env = "NETPATHWAY_HEALTH_CHECK_SECONDS", default_value_t = 5)]
    pub health_check_seconds: u64,
    /// Seconds to let calls in flight finish after SIGTERM/SIGINT before exiting anyway.
    #[arg(long, env = "NETPATHWAY_DRAIN_SECONDS", default_value_t = 10)]
    pub drain_seconds: u64,
}

/// A listening address, or "off".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddress(pub Option<SocketAddr>);

impl std::str::FromStr for OptionalAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(OptionalAddress(None));
        }
        s.parse().map(|a| OptionalAddress(Some(a))).map_err(|e| {
            format!("'{s}' is neither an address such as 127.0.0.1:9464 nor \"off\": {e}")
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl ServeConfig {
    /// The limits these settings describe.
    pub fn limits(&self) -> Limits {
        use std::time::Duration;
        Limits {
            max_message_bytes: self.max_message_bytes,
            max_deadline: Duration::from_secs(self.max_deadline_seconds),
            max_concurrent_calls: self.max_concurrent_calls as usize,
            retry_after: Duration::from_millis(self.retry_after_ms),
            http2_keepalive: Duration::from_secs(self.http2_keepalive_seconds),
            health_check_interval: Duration::from_secs(self.health_check_seconds.max(1)),
            max_patients_per_stream: self.max_patients_per_stream,
            screening_window: self.screening_window as usize,
            max_screening_patients: self.max_screening_patients as usize,
            max_full_answers: self.max_full_answers as usize,
            unread_answer: Duration::from_secs(self.unread_answer_seconds),
            http2: Http2Limits {
                max_concurrent_streams: self.http2_max_concurrent_streams,
                stream_window_bytes: self.http2_stream_window_bytes,
                connection_window_bytes: self.http2_connection_window_bytes,
                max_header_list_bytes: self.http2_max_header_list_bytes,
            },
        }
    }
}

impl ServeConfig {
    /// Secure defaults: beyond loopback the server needs TLS and authenticated callers unless
    /// the operator accepts otherwise by name.
    pub fn check_exposure(&self) -> Result<(), String> {
        if self.listen.ip().is_loopback() {
            return Ok(());
        }
        if self.tls_cert.is_none() && !self.allow_plaintext {
            return Err(format!(
                "refusing to listen on {} without TLS: give --tls-cert and --tls-key, or --allow-plaintext to accept unencrypted traffic explicitly",
                self.listen
            ));
        }
        if self.jwks_file.is_none()
            && self.client_identities.is_none()
            && !self.allow_unauthenticated
        {
            return Err(format!(
                "refusing to listen on {} without caller authentication: give --jwks-file (bearer tokens) or --tls-client-ca with --client-identities (mutual TLS), or --allow-unauthenticated to accept unauthenticated callers explicitly",
                self.listen
            ));
        }
        Ok(())
    }

    /// The authenticator these settings describe; open when neither tokens nor client
    /// certificate identities are configured.
    pub fn authenticator(
        &self,
    ) -> Result<crate::auth::Authenticator, crate::auth::AuthConfigError> {
        let mut auth = crate::auth::Authenticator::open();
        if let Some(jwks_file) = &self.jwks_file {
            auth = auth.with_jwt(crate::auth::JwtSettings {
                jwks_file: jwks_file.clone(),
                issuer: self.jwt_issuer.clone().unwrap_or_default(),
                audience: self.jwt_audience.clone().unwrap_or_default(),
                leeway: std::time::Duration::from_secs(self.jwt_leeway_seconds),
                roles_claim: self.jwt_roles_claim.clone(),
            })?;
        }
        if let Some(file) = &self.client_identities {
            auth = auth.with_client_identities(file)?;
        }
        Ok(auth)
    }
}

/// Limits that keep one caller from harming the others. Each is a flag; see the README.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest decoded request message, bytes.
    pub max_message_bytes: usize,
    /// Longest deadline honoured; calls with a longer or no deadline get this one.
    pub max_deadline: std::time::Duration,
    /// Calls in progress at once before new ones are shed.
    pub max_concurrent_calls: usize,
    /// RetryInfo delay given to shed calls.
    pub retry_after: std::time::Duration,
    /// HTTP/2 keepalive ping interval (the timeout for the ping's answer is the same).
    pub http2_keepalive: std::time::Duration,
    /// How often health checks that the database answers.
    pub health_check_interval: std::time::Duration,
    /// Patients one ScreenCohort stream may send.
    pub max_patients_per_stream: u64,
    /// Patients one ScreenCohort stream may have being decided or recorded at once.
    pub screening_window: usize,
    /// Patients all ScreenCohort streams together may have being decided or recorded at once.
    pub max_screening_patients: usize,
    /// FULL-view unary answers being decided, recorded or sent at once (at least one).
    pub max_full_answers: usize,
    /// Longest a unary answer may wait with none of it taken by its caller.
    pub unread_answer: std::time::Duration,
    /// What one HTTP/2 connection may hold.
    pub http2: Http2Limits,
}

/// What one HTTP/2 connection may hold: streams, flow-control windows and headers. Together with
/// the admission limit and the message size they bound the memory callers can make the server
/// hold (README, "Limits").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http2Limits {
    pub max_concurrent_streams: u32,
    pub stream_window_bytes: u32,
    pub connection_window_bytes: u32,
    pub max_header_list_bytes: u32,
}

impl Default for Http2Limits {
    fn default() -> Self {
        Http2Limits {
            max_concurrent_streams: 100,
            stream_window_bytes: 32 * 1024,
            connection_window_bytes: 8 * 1024 * 1024,
            max_header_list_bytes: 16 * 1024,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024,
            max_deadline: std::time::Duration::from_secs(30),
            max_concurrent_calls: 512,
            retry_after: std::time::Duration::from_millis(100),
            http2_keepalive: std::time::Duration::from_secs(30),
            health_check_interval: std::time::Duration::from_secs(5),
            max_patients_per_stream: 1_000_000,
            screening_window: 128,
            max_screening_patients: 512,
            max_full_answers: 32,
            unread_answer: std::time::Duration::from_secs(5),
            http2: Http2Limits::default(),
        }
    }
}
