use dtca_pki::Serial;

use super::*;
use crate::store::RevokeTarget;

#[tokio::test]
async fn crl_lists_revoked_certificates() {
    let f = fixture().await;
    let (token, _) = f.token(spec(Role::Node)).await;
    let issued = f
        .enroll_node(&token, &PrivateKey::generate(KeyType::P256).unwrap())
        .await
        .unwrap();
    f.registrar
        .revoke(
            &f.admin,
            RevokeTarget::Name {
                name: "web-1".into(),
                role: None,
            },
            "gone",
            now(),
        )
        .await
        .unwrap();
    let der = f.registrar.crl(now()).await.unwrap();
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
    let serials: Vec<Serial> = crl
        .iter_revoked_certificates()
        .map(|r| Serial::from_be_bytes(r.raw_serial()))
        .collect();
    assert_eq!(serials, vec![issued.info.serial]);
}

#[tokio::test]
async fn revoking_a_name_is_per_role_and_never_the_calling_admin() {
    let f = fixture().await;
    let (node_token, _) = f.token(spec(Role::Node)).await;
    let node = f
        .enroll_node(&node_token, &PrivateKey::generate(KeyType::P256).unwrap())
        .await
        .unwrap();
    // An operator who picked the node's name.
    let (op_token, _) = f.token(spec(Role::Operator)).await;
    let op_key = PrivateKey::generate(KeyType::P256).unwrap();
    let operator = f
        .registrar
        .enroll(
            &op_token,
            &csr::build(&op_key, "web-1", &[], &[]).unwrap(),
            "web-1",
            now(),
        )
        .await
        .unwrap();
    let by_name = |name: &str, role: Option<Role>| RevokeTarget::Name {
        name: name.into(),
        role,
    };

    let refused = f
        .registrar
        .revoke(&f.admin, by_name("web-1", None), "x", now())
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Refusal::InvalidArgument(m) if m.contains("--role")),
        "{refused:?}"
    );
    assert!(matches!(
        f.registrar
            .revoke(&f.admin, by_name("nobody", None), "x", now())
            .await,
        Err(Refusal::NotFound(_))
    ));
    let revoked = f
        .registrar
        .revoke(&f.admin, by_name("web-1", Some(Role::Operator)), "x", now())
        .await
        .unwrap();
    assert_eq!(revoked, vec![operator.info.serial]);
    // The node is untouched and now the only "web-1": no role needed.
    let revoked = f
        .registrar
        .revoke(&f.admin, by_name("web-1", None), "x", now())
        .await
        .unwrap();
    assert_eq!(revoked, vec![node.info.serial]);

    // The admin making the call cannot revoke itself, by name or by serial.
    let own = f.admin.serial.clone();
    for target in [by_name("admin", None), RevokeTarget::Serial(own.clone())] {
        let refused = f
            .registrar
            .revoke(&f.admin, target, "x", now())
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, Refusal::InvalidArgument(m) if m.contains("another admin")),
            "{refused:?}"
        );
    }
    assert!(
        f.registrar
            .certificate(&own)
            .await
            .unwrap()
            .summary
            .revoked_at
            .is_none()
    );
}
