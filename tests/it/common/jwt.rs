//! A test identity provider: an ES256 signing key, its JWKS file, and tokens with chosen claims.

use jsonwebtoken::{Algorithm, EncodingKey, Header};

pub const ISSUER: &str = "https://idp.hospital.example";
pub const AUDIENCE: &str = "net-pathway";

pub struct IdentityProvider {
    pub kid: String,
    key: EncodingKey,
    /// The public key as one JWKS entry.
    pub jwk: serde_json::Value,
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl IdentityProvider {
    pub fn new(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let point = pair.public_key_raw();
        assert_eq!(point.len(), 65, "uncompressed P-256 point");
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": base64url(&point[1..33]), "y": base64url(&point[33..65]),
        });
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("signing key");
        IdentityProvider {
            kid: kid.to_string(),
            key,
            jwk,
        }
    }

    /// Writes a JWKS file holding these providers' public keys.
    pub fn jwks_file(dir: &std::path::Path, providers: &[&IdentityProvider]) -> std::path::PathBuf {
        let path = dir.join("jwks.json");
        let set = serde_json::json!({ "keys": providers.iter().map(|p| p.jwk.clone()).collect::<Vec<_>>() });
        std::fs::write(&path, set.to_string()).expect("write jwks");
        path
    }

    /// A token for `subject` with `roles`, valid for an hour from now.
    pub fn token(&self, subject: &str, roles: &[&str]) -> String {
        let now = now();
        self.sign(serde_json::json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": subject, "roles": roles,
            "iat": now, "nbf": now, "exp": now + 3600,
        }))
    }

    /// A token with exactly this protected header (JSON) and these claims, signed with ES256.
    pub fn sign_with_header(&self, header: serde_json::Value, claims: serde_json::Value) -> String {
        use base64::Engine;
        let encode = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let message = format!("{}.{}", encode(&header), encode(&claims));
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &self.key, Algorithm::ES256)
            .expect("sign");
        format!("{message}.{signature}")
    }

    /// A token with exactly these claims.
    pub fn sign(&self, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("sign")
    }
}

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Bearer token settings for a server trusting `jwks_file`, with `leeway_seconds` of skew.
pub fn settings(
    jwks_file: std::path::PathBuf,
    leeway_seconds: u64,
) -> net_pathway::auth::JwtSettings {
    net_pathway::auth::JwtSettings {
        jwks_file,
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway: std::time::Duration::from_secs(leeway_seconds),
        roles_claim: "roles".into(),
    }
}
