//! Where and how the client connects: one address, several balanced, or a `dns:///` name
//! re-resolved as replicas come and go; eagerly or lazily; with TLS and a bearer token.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

use crate::client::NetPathwayClient;

/// Connect timeout used unless [`ClientBuilder::connect_timeout`] says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline sent with every call unless [`ClientBuilder::deadline`] says otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// How often a `dns:///` name is resolved again, so new replicas get calls and gone ones stop.
pub const DNS_REFRESH: Duration = Duration::from_secs(30);

/// Why a client could not be created. Its `Display` names the underlying cause, for example
/// "cannot connect to http://127.0.0.1:1: tcp connect error: Connection refused (os error 111)".
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint '{endpoint}': {}", causes(.source))]
    InvalidEndpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("invalid endpoint '{endpoint}': {reason}")]
    InvalidTarget { endpoint: String, reason: String },
    #[error("cannot connect to {endpoint}: {}", causes(.source))]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("cannot resolve {endpoint}: {source}")]
    Resolve {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("the bearer token is not a valid header value")]
    InvalidToken,
}

/// An error and every error beneath it, as one line: tonic's transport errors say only
/// "transport error" themselves and keep the cause in their source.
pub(crate) fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = cause.source();
    }
    text
}

/// How the client connects and calls.
#[derive(Clone)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// Deadline for each call (sent as grpc-timeout so the server can honour it too); retries
    /// happen within it.
    pub deadline: Duration,
    /// Compress requests and accept compressed responses with gzip.
    #[cfg(feature = "gzip")]
    pub gzip: bool,
    /// TLS settings (CA, domain name, and a client identity for mutual TLS); `None` for plaintext.
    #[cfg(feature = "tls")]
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// The name the server's certificate must carry for a `dns:///` target's addresses; the
    /// target's host when `None`. (For an `https://` target, set it in `tls` itself.)
    #[cfg(feature = "tls")]
    pub tls_domain: Option<String>,
    /// Bearer token (a JWT from the hospital's identity provider) sent with every call as
    /// `authorization: Bearer <token>`. Replace it with [`NetPathwayClient::with_bearer_token`].
    pub bearer_token: Option<String>,
    /// Further attempts a call may make after the first (see [`NetPathwayClient`] for which
    /// failures are retried); 0 never retries.
    pub retries: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            deadline: DEFAULT_DEADLINE,
            #[cfg(feature = "gzip")]
            gzip: false,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            tls_domain: None,
            bearer_token: None,
            retries: 2,
        }
    }
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("ClientOptions");
        out.field("connect_timeout", &self.connect_timeout)
            .field("deadline", &self.deadline);
        #[cfg(feature = "gzip")]
        out.field("gzip", &self.gzip);
        #[cfg(feature = "tls")]
        out.field("tls", &self.tls.is_some())
            .field("tls_domain", &self.tls_domain);
        out.field(
            "bearer_token",
            &self.bearer_token.as_ref().map(|_| "(redacted)"),
        )
        .field("retries", &self.retries)
        .finish()
    }
}

/// Builds a [`NetPathwayClient`]: `NetPathwayClient::builder("dns:///net-pathway:50051")`.
///
/// A target is `http://host:port` or `https://host:port` (one server), or `dns:///host:port`
/// (every address the name resolves to, balanced, and resolved again every 30 s: a Kubernetes
/// headless Service's replicas). [`ClientBuilder::endpoint`] adds further targets to balance
/// over. Over TLS, a `dns:///` target's certificates must name its host, or the name given to
/// [`ClientBuilder::tls_domain`]; an `http://` target with TLS set is refused, so that a token
/// is never sent in clear by mistake.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    targets: Vec<String>,
    options: ClientOptions,
}

impl ClientBuilder {
    pub(crate) fn new(target: impl Into<String>) -> Self {
        ClientBuilder {
            targets: vec![target.into()],
            options: ClientOptions::default(),
        }
    }

    /// Another target; calls are balanced over all of them.
    pub fn endpoint(mut self, target: impl Into<String>) -> Self {
        self.targets.push(target.into());
        self
    }

    /// Every option at once.
    pub fn options(mut self, options: ClientOptions) -> Self {
        self.options = options;
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.options.connect_timeout = timeout;
        self
    }

    /// Each call's deadline, retries included.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.options.deadline = deadline;
        self
    }

    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.options.bearer_token = Some(token.into());
        self
    }

    /// Further attempts after the first; 0 never retries.
    pub fn retries(mut self, retries: u32) -> Self {
        self.options.retries = retries;
        self
    }

    #[cfg(feature = "gzip")]
    pub fn gzip(mut self, gzip: bool) -> Self {
        self.options.gzip = gzip;
        self
    }

    /// TLS for every target; targets must then be `https://` or `dns:///`.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: tonic::transport::ClientTlsConfig) -> Self {
        self.options.tls = Some(tls);
        self
    }

    /// The name a `dns:///` target's certificates carry, when it is not the target's host
    /// (for example the Service name rather than the headless Service's).
    #[cfg(feature = "tls")]
    pub fn tls_domain(mut self, name: impl Into<String>) -> Self {
        self.options.tls_domain = Some(name.into());
        self
    }

    /// Connects now: one `http(s)://` target is connected before this returns, so a wrong
    /// address fails here. Several targets, or a `dns:///` one, are resolved now (a name that
    /// does not resolve fails here) and connected as calls need them. Needs a Tokio runtime.
    pub async fn connect(self) -> Result<NetPathwayClient, ClientError> {
        if let [target] = &self.targets[..]
            && !target.starts_with("dns:")
        {
            let channel = endpoint(target, &self.options, None)?
                .connect()
                .await
                .map_err(|source| ClientError::Connect {
                    endpoint: target.clone(),
                    source,
                })?;
            return NetPathwayClient::from_channel(channel, self.options);
        }
        let mut first = Vec::new();
        for target in &self.targets {
            if let Some((host, port)) = dns_target(target)? {
                first.push(resolve(target, &host, port).await?);
            }
        }
        self.balanced(first)
    }

    /// Returns at once and connects when the first call is made: a service can start before
    /// net-pathway does. A call made while no server answers fails UNAVAILABLE, or
    /// DEADLINE_EXCEEDED while a `dns:///` name resolves to nothing yet. Needs a Tokio runtime.
    pub fn connect_lazy(self) -> Result<NetPathwayClient, ClientError> {
        if let [target] = &self.targets[..]
            && !target.starts_with("dns:")
        {
            let channel = endpoint(target, &self.options, None)?.connect_lazy();
            return NetPathwayClient::from_channel(channel, self.options);
        }
        self.balanced(Vec::new())
    }

    /// One channel balanced over every target: fixed ones inserted once, `dns:///` ones
    /// resolved (starting from `resolved`, in target order) and followed by a background task
    /// that ends when the channel is dropped.
    fn balanced(
        self,
        resolved: Vec<BTreeSet<SocketAddr>>,
    ) -> Result<NetPathwayClient, ClientError> {
        // Room for every fixed target at once, and for a resolution's changes.
        let (channel, changes) = Channel::balance_channel::<String>(self.targets.len() + 64);
        let mut resolved = resolved.into_iter();
        for target in &self.targets {
            match dns_target(target)? {
                None => {
                    let e = endpoint(target, &self.options, None)?;
                    changes
                        .try_send(Change::Insert(target.clone(), e))
                        .map_err(|e| ClientError::InvalidTarget {
                            endpoint: target.clone(),
                            reason: e.to_string(),
                        })?;
                }
                Some((host, port)) => {
                    // Checked now, so that a bad TLS setting fails here and not in the task.
                    let checked = match host.contains(':') {
                        true => format!("{}://[{host}]:{port}", scheme(&self.options)),
                        false => format!("{}://{host}:{port}", scheme(&self.options)),
                    };
                    endpoint(&checked, &self.options, Some(&host))?;
                    let first = resolved.next().unwrap_or_default();
                    tokio::spawn(follow(
                        changes.clone(),
                        target.clone(),
                        host,
                        port,
                        self.options.clone(),
                        first,
                    ));
                }
            }
        }
        NetPathwayClient::from_channel(channel, self.options)
    }
}

/// `Some((host, port))` for a `dns:///host:port` target (the gRPC name syntax, no authority),
/// `None` for an `http(s)://` one.
fn dns_target(target: &str) -> Result<Option<(String, u16)>, ClientError> {
    let Some(rest) = target.strip_prefix("dns:") else {
        return Ok(None);
    };
    let invalid = |reason: &str| ClientError::InvalidTarget {
        endpoint: target.to_string(),
        reason: reason.to_string(),
    };
    let name = rest
        .strip_prefix("///")
        .ok_or_else(|| invalid("a DNS target is dns:///host:port (no DNS server authority)"))?;
    let (host, port) = name
        .rsplit_once(':')
        .ok_or_else(|| invalid("a DNS target names its port: dns:///host:port"))?;
    let port = port
        .parse()
        .map_err(|_| invalid("the port is not a number from 0 to 65535"))?;
    if host.is_empty() {
        return Err(invalid("a DNS target names its host"));
    }
    Ok(Some((host.trim_matches(['[', ']']).to_string(), port)))
}

/// The endpoint for one address, with the options' timeouts, keepalive and TLS (its domain
/// name set to the `ClientOptions::tls_domain`, or else to the host `resolved_from` when the
/// address came from resolving a name).
fn endpoint(
    target: &str,
    options: &ClientOptions,
    resolved_from: Option<&str>,
) -> Result<Endpoint, ClientError> {
    let invalid = |source| ClientError::InvalidEndpoint {
        endpoint: target.to_string(),
        source,
    };
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut e = Endpoint::from_shared(target.to_string()).map_err(invalid)?;
    #[cfg(feature = "tls")]
    if let Some(tls) = options.tls.clone() {
        if target.starts_with("http://") {
            return Err(ClientError::InvalidTarget {
                endpoint: target.to_string(),
                reason: "TLS is set, so the target must be https:// (or dns:///)".to_string(),
            });
        }
        let tls = match (&options.tls_domain, resolved_from) {
            (Some(name), Some(_)) => tls.domain_name(name.clone()),
            (None, Some(host)) => tls.domain_name(host),
            (_, None) => tls,
        };
        e = e.tls_config(tls).map_err(invalid)?;
    }
    #[cfg(not(feature = "tls"))]
    let _ = resolved_from;
    Ok(e.connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true))
}

/// The addresses `host` resolves to now.
async fn resolve(target: &str, host: &str, port: u16) -> Result<BTreeSet<SocketAddr>, ClientError> {
    let found: BTreeSet<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| ClientError::Resolve {
            endpoint: target.to_string(),
            source,
        })?
        .collect();
    if found.is_empty() {
        return Err(ClientError::Resolve {
            endpoint: target.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
        });
    }
    Ok(found)
}

/// Keeps the balanced channel's addresses for `host` those it resolves to: inserts new ones,
/// removes gone ones, every [`DNS_REFRESH`]. A failed resolution keeps the last addresses.
async fn follow(
    changes: tokio::sync::mpsc::Sender<Change<String, Endpoint>>,
    target: String,
    host: String,
    port: u16,
    options: ClientOptions,
    mut current: BTreeSet<SocketAddr>,
) {
    let scheme = scheme(&options);
    // Keyed by target and address: two targets that resolve to one address keep their own.
    let key = |address: &SocketAddr| format!("{target}#{address}");
    let mut first = true;
    loop {
        let found = if first && !current.is_empty() {
            Ok(std::mem::take(&mut current))
        } else {
            resolve(&target, &host, port).await
        };
        first = false;
        if let Ok(found) = found {
            for gone in current.difference(&found) {
                if changes.send(Change::Remove(key(gone))).await.is_err() {
                    return;
                }
            }
            for new in found.difference(&current) {
                let Ok(e) = endpoint(&format!("{scheme}://{new}"), &options, Some(&host)) else {
                    continue;
                };
                if changes.send(Change::Insert(key(new), e)).await.is_err() {
                    return;
                }
            }
            current = found;
        }
        // Until the name resolves at all, calls wait for it: look again soon.
        let pause = if current.is_empty() {
            Duration::from_secs(1)
        } else {
            DNS_REFRESH
        };
        tokio::time::sleep(pause).await;
        if changes.is_closed() {
            return;
        }
    }
}

/// `https` when the options set TLS, else `http`.
#[cfg(feature = "tls")]
fn scheme(options: &ClientOptions) -> &'static str {
    if options.tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// `http`: built without TLS.
#[cfg(not(feature = "tls"))]
fn scheme(_: &ClientOptions) -> &'static str {
    "http"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_targets_follow_the_grpc_name_syntax() {
        assert_eq!(
            dns_target("dns:///net-pathway.nhs.svc:50051")
                .ok()
                .flatten(),
            Some(("net-pathway.nhs.svc".to_string(), 50051))
        );
        assert_eq!(
            dns_target("dns:///[::1]:50051").ok().flatten(),
            Some(("::1".to_string(), 50051))
        );
        assert!(matches!(dns_target("http://127.0.0.1:50051"), Ok(None)));
        for bad in [
            "dns://8.8.8.8/host:1",
            "dns:///host",
            "dns:///host:http",
            "dns:///:1",
        ] {
            let error = dns_target(bad).expect_err(bad).to_string();
            assert!(
                error.starts_with(&format!("invalid endpoint '{bad}'")),
                "{error}"
            );
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_to_a_plaintext_target_is_refused() {
        let error = ClientBuilder::new("http://127.0.0.1:50051")
            .tls(tonic::transport::ClientTlsConfig::new())
            .connect_lazy()
            .expect_err("a token must not go out in clear")
            .to_string();
        assert!(error.contains("must be https://"), "{error}");
    }

    #[tokio::test]
    async fn an_ipv6_dns_target_is_accepted() {
        for target in ["dns:///[::1]:50051", "dns:///::1:50051"] {
            let made = ClientBuilder::new(target).connect_lazy();
            assert!(made.is_ok(), "{target}: {:?}", made.err());
        }
    }

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        let error = ClientBuilder::new(format!("http://127.0.0.1:{port}"))
            .connect()
            .await
            .expect_err("nothing listens");
        let text = error.to_string();
        assert!(text.contains("onnection refused"), "{text}");
    }
}
