//! The CA server end to end over real mutual TLS on loopback, through the library entry
//! points the binaries use: enrollment, renewal, revocation, admin API, and every kind of
//! bad input from the issue, each refused with its own status while the server keeps
//! serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ca_client::ca;
use ca_client::enroll::{self, EnrollOptions};
use ca_client::error::ClientError;
use ca_server::registrar::Rules;
use dtca_common::Reason;
use dtca_common::bundle::Bundle;
use dtca_common::reason;
use dtca_common::tls;
use dtca_pki::csr;
use dtca_pki::inspect::CertInfo;
use dtca_pki::key::{KeyType, PrivateKey};
use dtca_pki::token::{JoinToken, RootDigest};
use dtca_proto::v1::{self, admin_client::AdminClient, ca_client::CaClient};
use dtca_tests::ca::TestCa;
use dtca_tests::openssl;
use dtca_tests::process::wait_past;
use tonic::Code;

fn options(ca: &TestCa, token: &str, out: &std::path::Path) -> EnrollOptions {
    EnrollOptions {
        server: ca.server(),
        token: token.to_string(),
        name: "node-1".into(),
        extra_sans: vec!["node-1.example.com".into(), "127.0.0.1".into()],
        default_sans: false,
        key_type: KeyType::P256,
        out: out.to_path_buf(),
    }
}

async fn enroll_node(ca: &TestCa, out: &std::path::Path) -> enroll::Obtained {
    let token = ca.node_token(1).await;
    enroll::enroll(&options(ca, &token, out)).await.unwrap()
}

fn reason_of(err: &ClientError) -> Reason {
    err.reason()
}

fn status_reason(status: &tonic::Status) -> Option<Reason> {
    reason::of_status(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_chain_passes_openssl_verify_with_the_asked_sans_and_ekus() {
    let ca = TestCa::start().await;
    let out = tempfile::tempdir().unwrap();
    let obtained = enroll_node(&ca, out.path()).await;
    let ok = openssl::verify(&out.path().join("ca.pem"), &out.path().join("cert.pem")).unwrap();
    assert!(ok.contains(": OK"), "{ok}");
    let info = &obtained.info;
    assert_eq!(info.dns_names, vec!["node-1.example.com"]);
    assert_eq!(
        info.ip_addresses,
        vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    // serverAuth only: a node's certificate is never a docker client.
    assert!(info.server_auth && !info.client_auth && !info.is_ca);
    assert_eq!(
        info.identity.as_ref().unwrap().uri(),
        "dtca://test/node/node-1"
    );
    // openssl prints the serial the way the CLI and API print it.
    assert_eq!(
        openssl::serial(&out.path().join("cert.pem")),
        format!("serial={}", info.serial)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.path().join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The CA's root in ca.pem is the one the token pinned.
    let ca_pem = std::fs::read_to_string(out.path().join("ca.pem")).unwrap();
    let root = dtca_pki::inspect::certs_from_pem(&ca_pem)
        .unwrap()
        .remove(0);
    assert_eq!(RootDigest::of(&root), ca.root_digest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_gives_a_new_key_and_serial_with_the_same_identity() {
    let ca = TestCa::start().await;
    let out = tempfile::tempdir().unwrap();
    let first = enroll_node(&ca, out.path()).await;
    let renewed = enroll::renew(out.path(), None).await.unwrap();
    assert_eq!(renewed.info.identity, first.info.identity);
    assert_ne!(renewed.info.serial, first.info.serial);
    assert_ne!(renewed.info.public_key_der, first.info.public_key_der);
    assert_eq!(renewed.info.dns_names, first.info.dns_names);
    let on_disk = Bundle::load(out.path(), dtca_common::bundle::Layout::CLIENT).unwrap();
    assert_eq!(on_disk.leaf().unwrap().serial, renewed.info.serial);
    assert!(renewed.state.last_renewal.is_some());
    openssl::verify(&out.path().join("ca.pem"), &out.path().join("cert.pem")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_a_server_whose_root_does_not_match_before_sending_the_csr() {
    let ca = TestCa::start().await;
    let other = TestCa::start().await;
    let token = other.node_token(1).await;
    let out = tempfile::tempdir().unwrap();
    // The token pins the other CA's root; this server presents its own.
    let err = enroll::enroll(&options(&ca, &token, out.path()))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), Reason::RootMismatch, "{err}");
    // Nothing reached either CA: no token use anywhere, no file written.
    let tokens = other
        .admin()
        .await
        .list_tokens(v1::ListTokensRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert!(tokens.iter().all(|t| t.uses == 0));
    let audit = ca
        .admin()
        .await
        .list_audit(v1::ListAuditRequest { limit: 100 })
        .await
        .unwrap()
        .into_inner();
    assert!(audit.events.iter().all(|e| e.kind != "token-use"));
    assert!(!out.path().join("cert.pem").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refusals_each_have_their_own_reason_and_burn_nothing() {
    let ca = TestCa::start().await;
    let out = tempfile::tempdir().unwrap();
    let mut admin = ca.admin().await;

    // Used up.
    let once = ca.node_token(1).await;
    enroll::enroll(&options(&ca, &once, out.path()))
        .await
        .unwrap();
    let err = enroll::enroll(&options(&ca, &once, out.path()))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), Reason::TokenUsedUp, "{err}");

    // Unknown (right root, never created).
    let stranger = JoinToken::generate(ca.root_digest()).unwrap().expose();
    let err = enroll::enroll(&options(&ca, &stranger, out.path()))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), Reason::TokenUnknown, "{err}");

    // Revoked.
    let response = admin
        .create_token(v1::CreateTokenRequest {
            role: v1::Role::Node.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let id = response.info.unwrap().id;
    admin
        .revoke_token(v1::RevokeTokenRequest { id: id.clone() })
        .await
        .unwrap();
    let err = enroll::enroll(&options(&ca, &response.token, out.path()))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), Reason::TokenRevoked, "{err}");

    // Expired: a one-second token, used once it has run out.
    let short = ca
        .token(v1::CreateTokenRequest {
            role: v1::Role::Node.into(),
            ttl_seconds: 1,
            ..Default::default()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = enroll::enroll(&options(&ca, &short, out.path()))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), Reason::TokenExpired, "{err}");

    // Malformed: refused locally, before any connection.
    let err = enroll::enroll(&options(&ca, "DTCA-1-garbage", out.path()))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), Reason::TokenMalformed, "{err}");

    // SANs outside the token's limits; the use is not consumed.
    let limited = admin
        .create_token(v1::CreateTokenRequest {
            role: v1::Role::Node.into(),
            allow_dns: vec!["*.nodes.example.com".into()],
            allow_ip: vec!["10.0.0.0/8".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let err = enroll::enroll(&options(&ca, &limited.token, out.path()))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), Reason::NameNotAllowed, "{err}");
    assert!(err.to_string().contains("node-1.example.com"), "{err}");
    let mut inside = options(&ca, &limited.token, out.path());
    inside.name = "node-2".into();
    inside.extra_sans = vec!["a.nodes.example.com".into(), "10.1.2.3".into()];
    enroll::enroll(&inside).await.unwrap();

    // The server is still serving.
    ca.anonymous()
        .await
        .trust_bundle(v1::TrustBundleRequest {})
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_mis_signed_csrs_are_refused_and_requested_extensions_never_copied() {
    let ca = TestCa::start().await;
    let (mut client, trusted) = ca::first_contact(&ca.server_addr(), ca.root_digest())
        .await
        .unwrap();
    let token = ca.node_token(5).await;

    let enroll = |csr_der: Vec<u8>| v1::EnrollRequest {
        token: token.clone(),
        csr_der,
        name: "n1".into(),
    };
    // Not DER at all.
    let s = client
        .enroll(enroll(b"-----BEGIN nonsense".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(status_reason(&s), Some(Reason::CsrInvalid));

    // Signed by another key: body from one key, signature from another (Ed25519 keeps
    // the signature at the end, 64 bytes).
    let a = PrivateKey::generate(KeyType::Ed25519).unwrap();
    let b = PrivateKey::generate(KeyType::Ed25519).unwrap();
    let mut forged = csr::build(&a, "n1", &["n1.example".into()], &[]).unwrap();
    let other = csr::build(&b, "n1", &["n1.example".into()], &[]).unwrap();
    let n = forged.len();
    forged[n - 64..].copy_from_slice(&other[other.len() - 64..]);
    let s = client.enroll(enroll(forged)).await.unwrap_err();
    assert_eq!(status_reason(&s), Some(Reason::CsrInvalid), "{s:?}");
    assert!(s.message().contains("signature"), "{}", s.message());

    // Asks for CA:true, keyCertSign and an admin identity: issued as a plain node leaf.
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let der = csr_asking_for_everything(&key);
    let issued = client.enroll(enroll(der)).await.unwrap().into_inner();
    let info = CertInfo::from_der(&issued.leaf_der).unwrap();
    assert!(!info.is_ca);
    assert_eq!(info.identity.unwrap().uri(), "dtca://test/node/n1");
    assert!(info.server_auth && !info.client_auth);
    let text = x509_text(&issued.leaf_der);
    assert!(!text.contains("Certificate Sign"), "{text}");
    assert!(!text.contains("admin"), "{text}");

    // Every use that was refused is still there: 5 uses, 1 consumed.
    let tokens = ca
        .admin()
        .await
        .list_tokens(v1::ListTokensRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!(tokens.iter().map(|t| t.uses).sum::<u32>(), 1);
    drop(trusted);
}

fn csr_asking_for_everything(key: &PrivateKey) -> Vec<u8> {
    // Built with rcgen directly: our own CSR builder refuses to ask for such things.
    let mut params = rcgen_params();
    params.0.is_ca = params.1;
    params.0.key_usages = vec![params.2];
    params
        .0
        .serialize_request(key.pair())
        .unwrap()
        .der()
        .to_vec()
}

type Params = (
    rcgen::CertificateParams,
    rcgen::IsCa,
    rcgen::KeyUsagePurpose,
);

fn rcgen_params() -> Params {
    let mut p = rcgen::CertificateParams::new(vec!["n1.example".to_string()]).unwrap();
    p.subject_alt_names.push(rcgen::SanType::URI(
        "dtca://test/admin/evil".try_into().unwrap(),
    ));
    (
        p,
        rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
        rcgen::KeyUsagePurpose::KeyCertSign,
    )
}

fn x509_text(der: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.pem");
    std::fs::write(&path, dtca_pki::inspect::certs_to_pem([der])).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_is_refused_for_revoked_expired_and_foreign_certificates() {
    let ca = TestCa::start().await;
    let out = tempfile::tempdir().unwrap();

    // Revoked.
    let node = enroll_node(&ca, out.path()).await;
    let revoked = ca
        .admin()
        .await
        .revoke_certificate(v1::RevokeCertificateRequest {
            target: Some(v1::revoke_certificate_request::Target::Serial(
                node.info.serial.to_string().to_lowercase(),
            )),
            reason: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.serials, vec![node.info.serial.to_string()]);
    let err = enroll::renew(out.path(), None).await.unwrap_err();
    assert_eq!(reason_of(&err), Reason::CertRevoked, "{err}");

    // Expired: a two-second certificate, renewed after it ran out.
    let short = ca
        .token(v1::CreateTokenRequest {
            role: v1::Role::Node.into(),
            cert_ttl_seconds: 2,
            ..Default::default()
        })
        .await;
    let out2 = tempfile::tempdir().unwrap();
    let obtained = enroll::enroll(&options(&ca, &short, out2.path()))
        .await
        .unwrap();
    wait_past_async(obtained.info.not_after).await;
    let err = enroll::renew(out2.path(), None).await.unwrap_err();
    assert_eq!(reason_of(&err), Reason::CertExpired, "{err}");

    // Foreign: a certificate from another CA, presented to this one.
    let other = TestCa::start().await;
    let out3 = tempfile::tempdir().unwrap();
    let foreign = enroll_node(&other, out3.path()).await;
    let channel = ca.channel_as(&foreign.bundle).await;
    let csr = csr::build(
        &PrivateKey::generate(KeyType::P256).unwrap(),
        "node-1",
        &["node-1.example.com".into()],
        &[],
    )
    .unwrap();
    let s = CaClient::new(channel)
        .renew(v1::RenewRequest {
            csr_der: csr.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    assert_eq!(status_reason(&s), Some(Reason::CertForeign));

    // No certificate at all.
    let s = ca
        .anonymous()
        .await
        .renew(v1::RenewRequest { csr_der: csr })
        .await
        .unwrap_err();
    assert_eq!(status_reason(&s), Some(Reason::CertMissing));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_node_renews_within_a_configured_grace() {
    let ca = TestCa::start_with(Rules {
        renew_grace: Duration::from_secs(3600),
        ..Rules::default()
    })
    .await;
    let short = ca
        .token(v1::CreateTokenRequest {
            role: v1::Role::Node.into(),
            cert_ttl_seconds: 2,
            ..Default::default()
        })
        .await;
    let out = tempfile::tempdir().unwrap();
    let obtained = enroll::enroll(&options(&ca, &short, out.path()))
        .await
        .unwrap();
    wait_past_async(obtained.info.not_after).await;
    let renewed = enroll::renew(out.path(), None).await.unwrap();
    assert!(renewed.info.not_after > time::OffsetDateTime::now_utc());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_refuses_node_and_operator_certificates() {
    let ca = TestCa::start().await;
    let out = tempfile::tempdir().unwrap();
    let node = enroll_node(&ca, out.path()).await;
    let op_token = ca
        .token(v1::CreateTokenRequest {
            role: v1::Role::Operator.into(),
            ..Default::default()
        })
        .await;
    let out2 = tempfile::tempdir().unwrap();
    let mut opts = options(&ca, &op_token, out2.path());
    opts.name = "alice".into();
    let operator = enroll::enroll(&opts).await.unwrap();
    assert!(operator.info.dns_names.is_empty() && !operator.info.server_auth);
    for bundle in [&node.bundle, &operator.bundle] {
        let mut admin = AdminClient::new(ca.channel_as(bundle).await);
        let s = admin
            .create_token(v1::CreateTokenRequest {
                role: v1::Role::Admin.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied);
        assert_eq!(status_reason(&s), Some(Reason::PermissionDenied));
        let s = admin
            .list_certificates(v1::ListCertificatesRequest::default())
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied);
    }
    // Without a certificate: unauthenticated.
    let s = AdminClient::new(ca.channel_with(None).await)
        .list_tokens(v1::ListTokensRequest {})
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_and_random_bytes_do_not_stop_the_server() {
    let ca = TestCa::start().await;
    let token = ca.node_token(1).await;
    let s = ca
        .anonymous()
        .await
        .enroll(v1::EnrollRequest {
            token: token.clone(),
            csr_der: vec![0x30; 200 * 1024],
            name: "n".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
    // Refused by tonic before any handler, yet tagged like every other refusal.
    assert_eq!(reason::of_status(&s), Some(Reason::TooLarge), "{s:?}");

    // Random bytes straight onto the TLS port, several times.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for i in 0..5u8 {
        let mut raw = tokio::net::TcpStream::connect(ca.addr).await.unwrap();
        let junk: Vec<u8> = (0..4096u32)
            .map(|n| (n as u8).wrapping_mul(31).wrapping_add(i))
            .collect();
        let _ = raw.write_all(&junk).await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut sink)).await;
    }
    // A TLS client that goes silent mid-handshake does not block others either.
    let _idle = tokio::net::TcpStream::connect(ca.addr).await.unwrap();

    let out = tempfile::tempdir().unwrap();
    enroll::enroll(&options(&ca, &token, out.path()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_use_token_issues_exactly_one_certificate_under_concurrent_enrollments() {
    let ca = TestCa::start().await;
    let token = ca.node_token(1).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let server = ca.server();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let out = tempfile::tempdir().unwrap();
            let opts = EnrollOptions {
                server,
                token,
                name: format!("racer-{i}"),
                extra_sans: vec![format!("racer-{i}.example.com")],
                default_sans: false,
                key_type: KeyType::P256,
                out: out.path().to_path_buf(),
            };
            enroll::enroll(&opts)
                .await
                .map(|_| ())
                .map_err(|e| e.reason())
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(r) => assert_eq!(r, Reason::TokenUsedUp),
        }
    }
    assert_eq!(ok, 1);
    let certs = ca
        .admin()
        .await
        .list_certificates(v1::ListCertificatesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .certificates;
    assert_eq!(
        certs
            .iter()
            .filter(|c| c.name.starts_with("racer-"))
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_lists_shows_revokes_by_name_and_audits() {
    let ca = TestCa::start().await;
    let out = tempfile::tempdir().unwrap();
    let node = enroll_node(&ca, out.path()).await;
    let mut admin = ca.admin().await;

    let expiring = admin
        .list_certificates(v1::ListCertificatesRequest {
            expiring_within_seconds: 31 * 86_400,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .certificates;
    assert!(
        expiring
            .iter()
            .any(|c| c.serial == node.info.serial.to_string())
    );
    let none_soon = admin
        .list_certificates(v1::ListCertificatesRequest {
            expiring_within_seconds: 86_400,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .certificates;
    assert!(
        none_soon
            .iter()
            .all(|c| c.serial != node.info.serial.to_string())
    );

    // `show` takes the serial in any case, with leading zeros, as openssl prints it.
    let serial = format!("serial=000{}", node.info.serial.to_string().to_lowercase());
    let detail = admin
        .show_certificate(v1::ShowCertificateRequest { serial })
        .await
        .unwrap()
        .into_inner();
    assert!(detail.pem.contains("BEGIN CERTIFICATE"));
    assert!(!detail.token_id.is_empty());
    let s = admin
        .show_certificate(v1::ShowCertificateRequest {
            serial: "zz".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    let s = admin
        .show_certificate(v1::ShowCertificateRequest {
            serial: "0BADC0DE".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);

    let revoked = admin
        .revoke_certificate(v1::RevokeCertificateRequest {
            target: Some(v1::revoke_certificate_request::Target::Name(
                "node-1".into(),
            )),
            reason: "decommissioned".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .serials;
    assert_eq!(revoked, vec![node.info.serial.to_string()]);

    // The CRL through the API lists it, signed by the intermediate.
    let crl = ca
        .anonymous()
        .await
        .crl(v1::CrlRequest {})
        .await
        .unwrap()
        .into_inner()
        .crl_der;
    use x509_parser::prelude::FromDer;
    let (_, parsed) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&crl).unwrap();
    let signer = ca
        .registrar
        .signer(time::OffsetDateTime::now_utc())
        .unwrap();
    let (_, inter) =
        x509_parser::certificate::X509Certificate::from_der(signer.intermediate_der()).unwrap();
    parsed.verify_signature(inter.public_key()).unwrap();
    assert!(
        parsed
            .iter_revoked_certificates()
            .any(|r| dtca_pki::Serial::from_be_bytes(r.raw_serial()) == node.info.serial)
    );

    let audit = admin
        .list_audit(v1::ListAuditRequest { limit: 50 })
        .await
        .unwrap()
        .into_inner()
        .events;
    for kind in ["token-create", "token-use", "issue", "revoke"] {
        assert!(
            audit.iter().any(|e| e.kind == kind),
            "no {kind} in the audit log"
        );
    }
    let issue = audit
        .iter()
        .find(|e| e.kind == "issue" && e.subject == node.info.serial.to_string())
        .unwrap();
    assert!(issue.actor.starts_with("token:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_the_server_certificate_are_right() {
    let ca = TestCa::start().await;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = ca.channel_with(None).await;
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "dtca.v1.Ca".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // A client pinning the right root accepts the server; the server's certificate carries
    // the CA role, so a node certificate (also serverAuth) could never stand in for it.
    let (mut client, trusted) = ca::first_contact(&ca.server_addr(), ca.root_digest())
        .await
        .unwrap();
    assert_eq!(trusted.cluster, "test");
    client
        .trust_bundle(v1::TrustBundleRequest {})
        .await
        .unwrap();

    // TLS 1.2 and 1.3 both work.
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates({
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(ca.registrar.ca().active_root().der.clone().into())
                    .unwrap();
                roots
            })
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(ca.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        connector.connect(name, tcp).await.unwrap();
    }

    // Reflection lists the services.
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["dtca.v1.Ca", "dtca.v1.Admin", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }

    // So does v1alpha, which older grpcurl and evans use.
    use tonic_reflection::pb::v1alpha as alpha;
    let request = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = alpha::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected v1alpha reflection answer");
    };
    assert!(list.service.iter().any(|s| s.name == "dtca.v1.Ca"));
}

/// [`wait_past`] without holding up the runtime the in-process CA runs on.
async fn wait_past_async(t: time::OffsetDateTime) {
    tokio::task::spawn_blocking(move || wait_past(t))
        .await
        .unwrap();
}
