//! The local CA issues what clients accept: 90-day leaves for `serverAuth`, a name-constrained
//! CA of at most ten years, and an older unconstrained CA replaced.

use std::{sync::Arc, time::SystemTime};

use rustls::{
    client::{danger::ServerCertVerifier, WebPkiServerVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
    RootCertStore,
};

use super::*;

fn der(pem: &str) -> CertificateDer<'static> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("PEM")
}

fn verify(ca_pem: &str, leaf_pem: &str, host: &str) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(der(ca_pem)).expect("CA root");
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("verifier");
    verifier
        .verify_server_cert(
            &der(leaf_pem),
            &[],
            &ServerName::try_from(host.to_string()).expect("name"),
            &[],
            UnixTime::now(),
        )
        .map(drop)
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kanmon-devcerts-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

#[test]
fn leaves_are_ninety_day_server_certificates_that_verify() {
    let dir = tempdir("leaf");
    let ca = LocalCa::open_or_create(&dir, "kanmon.test").unwrap();
    let host = "alpha.us-east1.kanmon.test";
    let pair = ca.issue_pair(host).unwrap();
    let info = CertInfo::from_pem(&pair.cert_pem).unwrap();
    assert_eq!(info.lifetime(), LEAF_LIFETIME + BACKDATE);
    assert!(info.not_before <= SystemTime::now() && SystemTime::now() < info.not_after);
    assert!(info.server_auth, "no serverAuth EKU");
    assert!(info.digital_signature, "no digitalSignature key usage");
    assert_eq!(info.dns_names, [host]);
    assert!(ca.issued(&info));
    let ca_pem = fs::read_to_string(&ca.cert_path).unwrap();
    verify(&ca_pem, &pair.cert_pem, host).expect("a rustls client accepts the leaf");
    assert!(verify(&ca_pem, &pair.cert_pem, "beta.us-east1.kanmon.test").is_err());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_ca_is_name_constrained_and_at_most_ten_years() {
    let dir = tempdir("ca");
    let ca = LocalCa::open_or_create(&dir, "kanmon.test").unwrap();
    let ca_pem = fs::read_to_string(&ca.cert_path).unwrap();
    let info = CertInfo::from_pem(&ca_pem).unwrap();
    assert!(info.lifetime() <= CA_LIFETIME + BACKDATE);
    let mut permitted = info.permitted_dns.clone();
    permitted.sort();
    assert_eq!(permitted, ["kanmon.test", "localhost"]);
    // The CA refuses to issue outside its base domain...
    assert!(matches!(
        ca.issue_pair("www.example.com"),
        Err(DevCertError::OutsideConstraints(..))
    ));
    assert!(ca.issue_pair("evilkanmon.test").is_err());
    // ...and had it signed one anyway (a leaked key), clients would refuse it.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let forged = CertificateParams::new(vec!["www.example.com".to_string()])
        .unwrap()
        .signed_by(&key, &ca.issuer)
        .unwrap();
    assert!(verify(&ca_pem, &forged.pem(), "www.example.com").is_err());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unconstrained_ca_from_an_older_kanmon_is_replaced() {
    let dir = tempdir("old");
    fs::create_dir_all(&dir).unwrap();
    // What kanmon made before: no name constraints, valid 1975–4096.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let old = params.self_signed(&key).unwrap().pem();
    fs::write(dir.join("ca.crt"), &old).unwrap();
    fs::write(dir.join("ca.key"), key.serialize_pem()).unwrap();
    let ca = LocalCa::open_or_create(&dir, "kanmon.test").unwrap();
    assert!(ca.replaced);
    let now = fs::read_to_string(&ca.cert_path).unwrap();
    assert_ne!(now, old);
    // A CA for another base domain is replaced too; a fit one is kept.
    assert!(
        LocalCa::open_or_create(&dir, "other.test")
            .unwrap()
            .replaced
    );
    let kept = LocalCa::open_or_create(&dir, "other.test").unwrap();
    assert!(!kept.replaced);
    fs::remove_dir_all(&dir).unwrap();
}
