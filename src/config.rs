//! Command line and `NETPATHWAY_*` environment configuration, in one typed struct.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Log line format.
    #[arg(long, env = "NETPATHWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Database for the decision log and the audit registry: sqlite://PATH or postgres://...
    /// Default: an SQLite file `net-pathway.db` in the data directory.
    #[arg(long, env = "NETPATHWAY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory for the embedded database and the generated pseudonym key.
    #[arg(long, env = "NETPATHWAY_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Key for patient pseudonyms (at least 32 bytes). Default: `pseudonym.key` in the data
    /// directory, generated on first start with owner-only permissions.
    #[arg(long, env = "NETPATHWAY_PSEUDONYM_KEY_FILE")]
    pub pseudonym_key_file: Option<PathBuf>,
    /// Seconds to let calls in flight finish after SIGTERM/SIGINT before exiting anyway.
    #[arg(long, env = "NETPATHWAY_DRAIN_SECONDS", default_value_t = 10)]
    pub drain_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
