//! TLS and mutual TLS through the client library, and the secure defaults of the binary.

use std::time::Duration;

use crate::common::*;
use net_pathway::auth::Authenticator;
use net_pathway::config::Limits;
use net_pathway::engine::Policy;
use net_pathway::pb;
use net_pathway::store::pseudonym::Pseudonymiser;
use net_pathway::store::{DecisionLog, Store};
use net_pathway::{ActivePolicy, AppState};
use net_pathway_client::{ClientOptions, NetPathwayClient};
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
    let (port, stop, dir, _store) = tls_server_with(tls, Authenticator::open(), None).await;
    (port, stop, dir)
}

/// A TLS server with `auth`, and plaintext health on `probes` when given.
async fn tls_server_with(
    tls: ServerTlsConfig,
    auth: Authenticator,
    probes: Option<tokio::net::TcpListener>,
) -> (
    u16,
    tokio::sync::oneshot::Sender<()>,
    tempfile::TempDir,
    Store,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(&Store::default_url(dir.path()))
        .await
        .expect("store");
    let state = AppState::new(
        ActivePolicy::new(Policy::bundled().expect("policy")),
        DecisionLog::start(store.clone())
            .await
            .expect("decision log writer"),
        Pseudonymiser::new(&TEST_KEY).expect("key"),
        Limits::default(),
    )
    .expect("app state")
    .with_auth(auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(net_pathway::server::serve_with_health(
        listener,
        probes,
        state,
        Some(tls),
        async {
            let _ = stopped.await;
        },
    ));
    (port, stop, dir, store)
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

/// The TA539 referral, evaluated over TLS with `tls` as the client's settings.
async fn evaluate(
    port: u16,
    tls: ClientTlsConfig,
) -> Result<pb::EvaluateEligibilityResponse, tonic::Status> {
    let options = ClientOptions {
        tls: Some(tls),
        ..ClientOptions::default()
    };
    let client = NetPathwayClient::connect_with(format!("https://localhost:{port}"), options)
        .await
        .expect("connect");
    client
        .evaluate_eligibility(pb::EvaluateEligibilityRequest {
            patient: Some(Box::new(ta539_small_bowel().england().profile())),
            ..Default::default()
        })
        .await
}

#[tokio::test]
async fn mutual_tls_maps_certificate_names_to_identities_and_roles() {
    let ca = authority("net-pathway test CA");
    let (cert, key) = leaf(&ca, &["localhost"]);
    let clients = authority("hospital services CA");
    let dir = tempfile::tempdir().expect("dir");
    let identities = dir.path().join("clients.toml");
    std::fs::write(
        &identities,
        r#"
[[client]]
certificate_name = "mdt-workflow.hospital.example"
identity = "mdt-workflow"
roles = ["evaluate", "decision-log-read"]

[[client]]
certificate_name = "registry-clerk.hospital.example"
identity = "registry-clerk"
roles = ["registry-read"]
"#,
    )
    .expect("write identities");
    let auth = Authenticator::open()
        .with_client_identities(&identities)
        .expect("identities load");
    let server_tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(&clients.pem));
    let (port, _stop, _dir, store) = tls_server_with(server_tls, auth, None).await;
    let as_holder = |name: &str| {
        let (c, k) = leaf(&clients, &[name]);
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca.pem))
            .domain_name("localhost")
            .identity(Identity::from_pem(c, k))
    };

    let answer = evaluate(port, as_holder("mdt-workflow.hospital.example"))
        .await
        .expect("the MDT workflow evaluates");
    let stored = store
        .decision(&answer.decision_id)
        .await
        .expect("store")
        .expect("recorded");
    let record = <pb::DecisionRecord as prost::Message>::decode(stored.record.as_slice())
        .expect("record decodes");
    assert_eq!(
        record.caller, "mdt-workflow",
        "the mapped identity is recorded"
    );

    let refused = evaluate(port, as_holder("registry-clerk.hospital.example"))
        .await
        .expect_err("registry-read cannot evaluate");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    let refused = evaluate(port, as_holder("stranger.hospital.example"))
        .await
        .expect_err("a certificate from the CA that is not mapped");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("not mapped"), "{refused:?}");
}

#[test]
fn a_client_identity_file_with_an_unknown_role_is_refused_with_its_line() {
    let dir = tempfile::tempdir().expect("dir");
    let identities = dir.path().join("clients.toml");
    std::fs::write(
        &identities,
        "[[client]]\ncertificate_name = \"a\"\nidentity = \"a\"\nroles = [\"admin\"]\n",
    )
    .expect("write");
    let error = Authenticator::open()
        .with_client_identities(&identities)
        .expect_err("unknown role");
    assert!(
        error.to_string().contains("unknown role 'admin'"),
        "{error}"
    );
    std::fs::write(
        &identities,
        "[[client]]\ncertificate_name = \"a\"\nidentity = 7\n",
    )
    .expect("write");
    let error = Authenticator::open()
        .with_client_identities(&identities)
        .expect_err("bad type");
    assert!(
        error.to_string().contains("clients.toml: line 3"),
        "{error}"
    );
}

#[tokio::test]
async fn kubernetes_probes_get_plaintext_health_beside_a_tls_only_service() {
    let ca = authority("net-pathway test CA");
    let (cert, key) = leaf(&ca, &["localhost"]);
    let probes = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let probe_port = probes.local_addr().expect("addr").port();
    let (_port, _stop, _dir, _store) = tls_server_with(
        ServerTlsConfig::new().identity(Identity::from_pem(cert, key)),
        Authenticator::open(),
        Some(probes),
    )
    .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{probe_port}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("plaintext connection to the probe port");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "liveness", "netpathway.v1.EligibilityService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health {service:?}: {e:?}"))
            .into_inner()
            .status();
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service:?}"
        );
    }
    let refused = pb::eligibility_service_client::EligibilityServiceClient::new(channel)
        .evaluate_eligibility(pb::EvaluateEligibilityRequest::default())
        .await
        .expect_err("the probe port serves health only");
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
}

#[test]
fn listening_beyond_loopback_needs_tls_and_authentication_or_an_explicit_flag() {
    let (code, logs) = run_to_exit(&["--listen", "0.0.0.0:0"]);
    assert_eq!(code, Some(4), "{logs}");
    assert!(
        logs.contains("without TLS") && logs.contains("--allow-plaintext"),
        "{logs}"
    );

    let (code, logs) = run_to_exit(&["--listen", "0.0.0.0:0", "--allow-plaintext"]);
    assert_eq!(code, Some(4), "{logs}");
    assert!(
        logs.contains("without caller authentication") && logs.contains("--allow-unauthenticated"),
        "{logs}"
    );

    // Bearer tokens count as authentication: TLS plus a JWKS is a complete secure set-up.
    use clap::Parser;
    let exposed = |extra: &[&str]| {
        let mut args = vec!["net-pathway", "--listen", "0.0.0.0:50051"];
        args.extend_from_slice(extra);
        net_pathway::config::Cli::try_parse_from(args)
            .expect("flags parse")
            .serve
            .check_exposure()
    };
    let tls = ["--tls-cert", "server.pem", "--tls-key", "server.key"];
    let jwt = [
        "--jwks-file",
        "jwks.json",
        "--jwt-issuer",
        "https://idp",
        "--jwt-audience",
        "net-pathway",
    ];
    assert!(exposed(&[&tls[..], &jwt[..]].concat()).is_ok());
    let mtls = [
        "--tls-client-ca",
        "clients.pem",
        "--client-identities",
        "clients.toml",
    ];
    assert!(exposed(&[&tls[..], &mtls[..]].concat()).is_ok());
    let why = exposed(&[&tls[..], &["--tls-client-ca", "clients.pem"][..]].concat())
        .expect_err("a client CA alone maps no identities");
    assert!(why.contains("--client-identities"), "{why}");
}
