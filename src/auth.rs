//! Who is calling, and may they: bearer JWTs verified offline against a JWKS file, and mutual
//! TLS client certificates mapped to identities. Roles decide which RPCs a caller may use.
//!
//! No credential (when authentication is configured) is UNAUTHENTICATED; a credential without
//! the RPC's role is PERMISSION_DENIED. Tokens are never logged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tonic::Status;
use tonic::codegen::http::HeaderMap;
use tonic::codegen::http::header::AUTHORIZATION;
use tonic_types::ErrorDetails;

use crate::errors::{Reason, error, error_with};

/// What a caller may do. Each RPC needs exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    /// Eligibility, funding, and reading the active policy.
    Evaluate,
    /// Enrolling, recording prior agreements, withdrawing.
    RegistryWrite,
    /// Reading enrolments.
    RegistryRead,
    /// Reading and replaying stored decisions.
    DecisionLogRead,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Evaluate,
        Role::RegistryWrite,
        Role::RegistryRead,
        Role::DecisionLogRead,
    ];

    /// The role's name in tokens and in the client identity file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Evaluate => "evaluate",
            Role::RegistryWrite => "registry-write",
            Role::RegistryRead => "registry-read",
            Role::DecisionLogRead => "decision-log-read",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The authenticated caller of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Recorded with every decision: the token's `sub`, the certificate's mapped identity, or
    /// "anonymous" when the service runs without authentication.
    pub identity: String,
    roles: u8,
}

impl Caller {
    /// The caller when authentication is not configured (loopback, or explicitly allowed).
    pub fn anonymous() -> Self {
        Caller {
            identity: ANONYMOUS.into(),
            roles: Role::ALL.iter().fold(0, |acc, r| acc | r.bit()),
        }
    }

    pub(crate) fn has(&self, role: Role) -> bool {
        self.roles & role.bit() != 0
    }
}

/// The identity recorded when no authentication is configured.
pub(crate) const ANONYMOUS: &str = "anonymous";

/// Why authentication could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Setting(String),
}

/// Bearer token settings.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub jwks_file: PathBuf,
    pub issuer: String,
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// The claim holding the caller's roles: an array of names or a space-separated string.
    pub roles_claim: String,
}

/// Largest clock skew accepted in configuration: beyond this an expired token is not expired.
pub(crate) const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// Verified tokens remembered, so a service reusing its token pays for one signature check.
const TOKEN_CACHE_ENTRIES: usize = 4096;

struct JwtVerifier {
    settings: JwtSettings,
    keys: RwLock<Arc<Keys>>,
    /// Verified token → (caller, expiry in Unix seconds).
    cache: Mutex<HashMap<String, (Caller, u64)>>,
}

/// The JWKS file's keys, by key id.
struct Keys {
    by_kid: Vec<(Option<String>, Algorithm, DecodingKey)>,
}

impl Keys {
    fn load(path: &Path) -> Result<Keys, AuthConfigError> {
        let fail = |reason: String| AuthConfigError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let set: JwkSet =
            serde_json::from_str(&text).map_err(|e| fail(format!("line {}: {e}", e.line())))?;
        let mut by_kid = Vec::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let kid = jwk.common.key_id.clone();
            let name = kid.clone().unwrap_or_else(|| format!("keys[{i}]"));
            let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::OctetKey(_), _) => {
                    return Err(fail(format!(
                        "{name}: symmetric (oct) keys are refused; the JWKS must hold public keys only"
                    )));
                }
                (_, Some(alg)) => alg
                    .to_string()
                    .parse::<Algorithm>()
                    .map_err(|e| fail(format!("{name}: algorithm {alg} is not supported: {e}")))?,
                (AlgorithmParameters::EllipticCurve(ec), None) => match ec.curve {
                    jsonwebtoken::jwk::EllipticCurve::P256 => Algorithm::ES256,
                    jsonwebtoken::jwk::EllipticCurve::P384 => Algorithm::ES384,
                    ref other => {
                        return Err(fail(format!("{name}: curve {other:?} is not supported")));
                    }
                },
                (AlgorithmParameters::RSA(_), None) => Algorithm::RS256,
                (AlgorithmParameters::OctetKeyPair(_), None) => Algorithm::EdDSA,
            };
            if matches!(
                algorithm,
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
            ) {
                return Err(fail(format!("{name}: HMAC algorithms are refused")));
            }
            let key = DecodingKey::from_jwk(jwk).map_err(|e| fail(format!("{name}: {e}")))?;
            by_kid.push((kid, algorithm, key));
        }
        if by_kid.is_empty() {
            return Err(fail("the key set holds no keys".into()));
        }
        Ok(Keys { by_kid })
    }

    /// The key a token names, or the only key when the token names none.
    fn find(&self, kid: Option<&str>) -> Option<&(Option<String>, Algorithm, DecodingKey)> {
        match kid {
            Some(kid) => self.by_kid.iter().find(|k| k.0.as_deref() == Some(kid)),
            None if self.by_kid.len() == 1 => self.by_kid.first(),
            None => None,
        }
    }
}

/// One entry of the client identity file: a certificate name mapped to an identity and roles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientEntry {
    /// Matched against the certificate's subject common name and its DNS subject alternative names.
    certificate_name: String,
    identity: String,
    roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    #[serde(default)]
    client: Vec<ClientEntry>,
}

/// Authenticates calls and checks roles. Cheap to share.
#[derive(Clone, Default)]
pub struct Authenticator {
    jwt: Option<Arc<JwtVerifier>>,
    /// Certificate name → caller.
    certificates: Option<Arc<HashMap<String, Caller>>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("bearer_tokens", &self.jwt.is_some())
            .field(
                "client_certificates",
                &self.certificates.as_ref().map(|c| c.len()),
            )
            .finish()
    }
}

impl Authenticator {
    /// No authentication: every caller is "anonymous" with every role. Only for loopback or
    /// when the operator allows it explicitly.
    pub fn open() -> Self {
        Authenticator::default()
    }

    /// Whether calls are authenticated at all.
    pub fn is_configured(&self) -> bool {
        self.jwt.is_some() || self.certificates.is_some()
    }

    /// Adds bearer token verification against a JWKS file.
    pub fn with_jwt(mut self, settings: JwtSettings) -> Result<Self, AuthConfigError> {
        if settings.leeway > MAX_LEEWAY {
            return Err(AuthConfigError::Setting(format!(
                "--jwt-leeway-seconds {} is more than the {} seconds allowed",
                settings.leeway.as_secs(),
                MAX_LEEWAY.as_secs()
            )));
        }
        if settings.issuer.is_empty() || settings.audience.is_empty() {
            return Err(AuthConfigError::Setting(
                "--jwks-file needs --jwt-issuer and --jwt-audience".into(),
            ));
        }
        let keys = Keys::load(&settings.jwks_file)?;
        self.jwt = Some(Arc::new(JwtVerifier {
            settings,
            keys: RwLock::new(Arc::new(keys)),
            cache: Mutex::new(HashMap::new()),
        }));
        Ok(self)
    }

    /// Adds the mapping from client certificate names to identities and roles (TOML).
    pub fn with_client_identities(mut self, path: &Path) -> Result<Self, AuthConfigError> {
        let fail = |reason: String| AuthConfigError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let file: ClientFile = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            fail(match line {
                Some(line) => format!("line {line}: {}", e.message()),
                None => e.message().to_string(),
            })
        })?;
        let mut map = HashMap::new();
        for (i, entry) in file.client.into_iter().enumerate() {
            let mut roles = 0u8;
            for name in &entry.roles {
                let role = Role::from_name(name).ok_or_else(|| {
                    fail(format!(
                        "client[{i}] ({}): unknown role '{name}'; roles are {}",
                        entry.certificate_name,
                        Role::ALL.map(Role::name).join(", ")
                    ))
                })?;
                roles |= role.bit();
            }
            if entry.identity.trim().is_empty() || entry.certificate_name.trim().is_empty() {
                return Err(fail(format!(
                    "client[{i}]: certificate_name and identity must not be empty"
                )));
            }
            let caller = Caller {
                identity: entry.identity,
                roles,
            };
            if map.insert(entry.certificate_name.clone(), caller).is_some() {
                return Err(fail(format!(
                    "client[{i}]: certificate_name '{}' is listed twice",
                    entry.certificate_name
                )));
            }
        }
        self.certificates = Some(Arc::new(map));
        Ok(self)
    }

    /// Re-reads the JWKS file (key rotation, on SIGHUP). A bad file keeps the old keys.
    pub fn reload_keys(&self) -> Result<(), AuthConfigError> {
        if let Some(jwt) = &self.jwt {
            let keys = Keys::load(&jwt.settings.jwks_file)?;
            match jwt.keys.write() {
                Ok(mut guard) => *guard = Arc::new(keys),
                Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
            }
            match jwt.cache.lock() {
                Ok(mut cache) => cache.clear(),
                Err(poisoned) => poisoned.into_inner().clear(),
            }
        }
        Ok(())
    }

    /// The caller, if they hold `role`; UNAUTHENTICATED or PERMISSION_DENIED otherwise. Reads
    /// only the call's headers and its connection's client certificate, never its body.
    pub(crate) fn authorize_headers(
        &self,
        headers: &HeaderMap,
        peer_certs: impl FnOnce() -> Option<PeerCertificates>,
        role: Role,
    ) -> Result<Caller, Status> {
        let caller = self.authenticate(headers, peer_certs)?;
        if caller.has(role) {
            Ok(caller)
        } else {
            Err(error_with(
                Reason::RoleMissing,
                format!(
                    "{} does not hold the '{}' role this call needs",
                    caller.identity,
                    role.name()
                ),
                ErrorDetails::new(),
                HashMap::from([("role".to_string(), role.name().to_string())]),
            ))
        }
    }

    /// Who is calling: a bearer token first, then a mapped client certificate.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        peer_certs: impl FnOnce() -> Option<PeerCertificates>,
    ) -> Result<Caller, Status> {
        if !self.is_configured() {
            return Ok(Caller::anonymous());
        }
        if let Some(value) = headers.get(AUTHORIZATION) {
            let Some(jwt) = &self.jwt else {
                return Err(refused(
                    "bearer tokens are not accepted here; present a client certificate",
                ));
            };
            let token = value
                .to_str()
                .ok()
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| refused("the authorization header must be 'Bearer <token>'"))?;
            return jwt.verify(token);
        }
        if let Some(certificates) = &self.certificates
            && let Some(chain) = peer_certs()
            && let Some(leaf) = chain.first()
        {
            let names = certificate_names(leaf.as_ref());
            return names
                .iter()
                .find_map(|n| certificates.get(n))
                .cloned()
                .ok_or_else(|| {
                    error(
                        Reason::CertificateNotMapped,
                        format!(
                            "client certificate {} is not mapped to an identity",
                            names.first().map_or("(no name)", String::as_str)
                        ),
                    )
                });
        }
        Err(error(
            Reason::CredentialMissing,
            if self.jwt.is_some() {
                "no credential: send 'authorization: Bearer <token>'"
            } else {
                "no credential: present a client certificate"
            },
        ))
    }
}

/// The client certificate chain of a call's connection, leaf first.
pub(crate) type PeerCertificates = Arc<Vec<tonic::transport::CertificateDer<'static>>>;

/// The certificate's subject common names, then its DNS subject alternative names.
fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_string());
            }
        }
    }
    names
}

impl JwtVerifier {
    fn verify(&self, token: &str) -> Result<Caller, Status> {
        let now = jsonwebtoken::get_current_timestamp();
        let leeway = self.settings.leeway.as_secs();
        if let Ok(cache) = self.cache.lock()
            && let Some((caller, exp)) = cache.get(token)
            && now <= exp.saturating_add(leeway)
        {
            return Ok(caller.clone());
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| refused("the bearer token is not a well-formed JWT"))?;
        // RFC 7515 §4.1.11: a token whose header makes extensions critical must be refused by a
        // recipient that does not understand them, and this service understands none.
        if names_critical_extensions(token) {
            return Err(refused(
                "the token's header names critical extensions (crit) that this service does not understand",
            ));
        }
        let keys = match self.keys.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        let (_, algorithm, key) = keys.find(header.kid.as_deref()).ok_or_else(|| {
            refused(match &header.kid {
                Some(kid) => format!("the token's signing key '{kid}' is not in the key set"),
                None => "the token names no key (kid) and the key set holds several".into(),
            })
        })?;
        if header.alg != *algorithm {
            return Err(refused(format!(
                "the token is signed with {:?} but its key is for {algorithm:?}",
                header.alg
            )));
        }
        let mut validation = Validation::new(*algorithm);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = leeway;
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            key,
            &validation,
        )
        .map_err(|e| refused(token_problem(e.kind())))?;
        let claims = data.claims;
        let identity = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| refused("the token has no subject (sub)"))?
            .to_string();
        let names: Vec<&str> = match claims.get(&self.settings.roles_claim) {
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(|v| v.as_str()).collect()
            }
            Some(serde_json::Value::String(s)) => s.split_whitespace().collect(),
            _ => Vec::new(),
        };
        // Roles for other services in the same token are ignored.
        let roles = names
            .into_iter()
            .filter_map(Role::from_name)
            .fold(0, |acc, r| acc | r.bit());
        let caller = Caller { identity, roles };
        let exp = claims.get("exp").and_then(|v| v.as_u64()).unwrap_or(now);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= TOKEN_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(token.to_string(), (caller.clone(), exp));
        }
        Ok(caller)
    }
}

/// Whether the JWT's protected header carries `crit` (jsonwebtoken's `Header` drops it).
fn names_critical_extensions(token: &str) -> bool {
    use base64::Engine;
    let Some(encoded) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()
        .and_then(|json| {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&json).ok()
        })
        .is_some_and(|header| header.contains_key("crit"))
}

/// UNAUTHENTICATED: the credential was refused.
fn refused(message: impl Into<String>) -> Status {
    error(Reason::CredentialRefused, message)
}

fn token_problem(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "the bearer token has expired".into(),
        K::ImmatureSignature => "the bearer token is not valid yet (nbf)".into(),
        K::InvalidIssuer => "the bearer token's issuer (iss) is not the one configured".into(),
        K::InvalidAudience => "the bearer token's audience (aud) is not this service".into(),
        K::InvalidSignature => "the bearer token's signature does not verify".into(),
        K::MissingRequiredClaim(claim) => format!("the bearer token has no '{claim}' claim"),
        K::InvalidAlgorithm => "the bearer token's algorithm does not match its key".into(),
        _ => "the bearer token cannot be verified".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::from_name(role.name()), Some(role));
        }
        assert_eq!(Role::from_name("admin"), None);
    }

    #[test]
    fn the_anonymous_caller_holds_every_role_only_without_authentication() {
        let open = Authenticator::open();
        assert!(!open.is_configured());
        let caller = open
            .authorize_headers(&HeaderMap::new(), || None, Role::RegistryWrite)
            .expect("open");
        assert_eq!(caller.identity, ANONYMOUS);
    }
}
