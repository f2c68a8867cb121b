//! TLS and mutual TLS through the client library, and the secure defaults of the binary.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use net_pathway::api::{ActivePolicy, AppState, Limits};
use net_pathway::client::{ClientOptions, NetPathwayClient};
use net_pathway::engine::Policy;
use net_pathway::pb;
use net_pathway::store::pseudonym::Pseudonymiser;
use net_pathway::store::{DecisionLog, Store};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A certificate authority that can sign leaf certificates.
struct Authority {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn authority(name: &str) -> Authority {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    let pem = params.self_signed(&key).expect("CA").pem();
    Authority {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// (certificate PEM, key PEM) for `names`, signed by `ca`.
fn leaf(ca: &Authority, names: &[&str]) -> (String, String) {
    let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.issuer).expect("leaf");
    (cert.pem(), key.serialize_pem())
}

async fn tls_server(
    tls: ServerTlsConfig,
) -> (u16, tokio::sync::oneshot::Sender<()>, tempfile::TempDir) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(&Store::default_url(dir.path()))
        .await
        .expect("store");
    let state = AppState::new(
        ActivePolicy::new(Policy::bundled().expect("policy")),
        DecisionLog::start(store),
        Pseudonymiser::new(&TEST_KEY).expect("key"),
        Limits::default(),
    )
    .expect("app state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(net_pathway::server::serve(
        listener,
        state,
        Some(tls),
        async {
            let _ = stopped.await;
        },
    ));
    (port, stop, dir)
}

async fn call(port: u16, tls: ClientTlsConfig) -> Result<pb::GetActivePolicyResponse, String> {
    let options = ClientOptions {
        tls: Some(tls),
        connect_timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    let client = NetPathwayClient::connect_with(format!("https://localhost:{port}"), options)
        .await
        .map_err(|e| e.to_string())?;
    client
        .get_active_policy(pb::GetActivePolicyRequest::default())
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn tls_calls_succeed_with_the_right_ca_and_fail_with_a_wrong_one() {
    let ca = authority("net-pathway test CA");
    let (cert, key) = leaf(&ca, &["localhost", "127.0.0.1"]);
    let (port, _stop, _dir) =
        tls_server(ServerTlsConfig::new().identity(Identity::from_pem(cert, key))).await;

    let trusted = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.pem))
        .domain_name("localhost");
    assert!(call(port, trusted).await.is_ok());

    let stranger = authority("another CA");
    let untrusted = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&stranger.pem))
        .domain_name("localhost");
    assert!(
        call(port, untrusted).await.is_err(),
        "a server certificate from an unknown CA is refused"
    );
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_from_the_configured_ca() {
    let ca = authority("net-pathway test CA");
    let (cert, key) = leaf(&ca, &["localhost"]);
    let clients = authority("hospital services CA");
    let server_tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(&clients.pem));
    let (port, _stop, _dir) = tls_server(server_tls).await;
    let base = || {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca.pem))
            .domain_name("localhost")
    };

    let (mdt_cert, mdt_key) = leaf(&clients, &["mdt-workflow.hospital.example"]);
    assert!(
        call(port, base().identity(Identity::from_pem(mdt_cert, mdt_key)))
            .await
            .is_ok(),
        "a client certificate from the CA"
    );
    assert!(call(port, base()).await.is_err(), "no client certificate");
    let (rogue_cert, rogue_key) = leaf(&authority("rogue CA"), &["rogue"]);
    assert!(
        call(
            port,
            base().identity(Identity::from_pem(rogue_cert, rogue_key))
        )
        .await
        .is_err(),
        "a certificate from another CA"
    );
}

fn refused(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_net-pathway"))
        .args(args)
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn listening_beyond_loopback_needs_tls_and_authentication_or_an_explicit_flag() {
    let (code, logs) = refused(&["--listen", "0.0.0.0:0"]);
    assert_eq!(code, Some(4), "{logs}");
    assert!(
        logs.contains("without TLS") && logs.contains("--allow-plaintext"),
        "{logs}"
    );

    let (code, logs) = refused(&["--listen", "0.0.0.0:0", "--allow-plaintext"]);
    assert_eq!(code, Some(4), "{logs}");
    assert!(
        logs.contains("without caller authentication") && logs.contains("--allow-unauthenticated"),
        "{logs}"
    );
}
