//! Certificate Secrets in the store: the contract is enforced, a bad version keeps the good
//! one, a relist drops what is gone, and the directory and the Secrets never drop each other.

use super::{
    secrets::{secret_name, Purpose, SecretCert, SECRET_TYPE},
    store::CertError,
    CertStore,
};
use crate::{devcerts::LocalCa, metrics::Metrics};

const BASE: &str = "kanmon.test";
const ALPHA: &str = "alpha.us-east1.kanmon.test";
const BETA: &str = "beta.us-east1.kanmon.test";

struct Fixture {
    _dir: tempfile::TempDir,
    ca: LocalCa,
    store: CertStore,
    metrics: Metrics,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::open_or_create(&dir.path().join("ca"), BASE).unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let metrics = Metrics::new().unwrap();
    let store = CertStore::new(certs, metrics.clone());
    Fixture {
        _dir: dir,
        ca,
        store,
        metrics,
    }
}

fn secret(ca: &LocalCa, purpose: Purpose, host: &str) -> SecretCert {
    let pair = ca.issue_pair(host).unwrap();
    SecretCert {
        name: secret_name(purpose, host),
        secret_type: Some(SECRET_TYPE.into()),
        purpose: Some(purpose.label().into()),
        hostname: Some(host.into()),
        crt: pair.cert_pem.into_bytes(),
        key: pair.key_pem.into_bytes(),
    }
}

/// The leaf the store serves for `host`, as DER.
fn served(store: &CertStore, host: &str) -> Option<Vec<u8>> {
    store.find(host).map(|ck| ck.cert[0].to_vec())
}

fn leaf(s: &SecretCert) -> Vec<u8> {
    rustls_pemfile::certs(&mut s.crt.as_slice())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[test]
fn a_secret_is_served_and_a_malformed_update_keeps_the_previous_one() {
    let f = fixture();
    let good = secret(&f.ca, Purpose::Serving, ALPHA);
    let report = f.store.put_secret(&good, BASE);
    assert_eq!(report.loaded, [ALPHA]);
    assert_eq!(served(&f.store, ALPHA), Some(leaf(&good)));
    assert_eq!(f.metrics.certificates.get(), 1);

    let mut broken = good.clone();
    broken.key = b"-----BEGIN PRIVATE KEY-----\nnot base64\n".to_vec();
    let report = f.store.put_secret(&broken, BASE);
    assert_eq!(report.errors.len(), 1);
    // The message names the Secret and never quotes its key.
    let message = report.errors[0].to_string();
    assert!(message.contains(&good.name), "{message}");
    assert!(!message.contains("not base64"), "{message}");
    assert_eq!(served(&f.store, ALPHA), Some(leaf(&good)));
    assert_eq!(f.metrics.cert_errors.get(), 1);

    // A certificate with another host's key is refused too.
    let mut mismatched = good.clone();
    mismatched.key = secret(&f.ca, Purpose::Serving, BETA).key;
    assert_eq!(f.store.put_secret(&mismatched, BASE).errors.len(), 1);
    assert_eq!(served(&f.store, ALPHA), Some(leaf(&good)));

    let renewed = secret(&f.ca, Purpose::Serving, ALPHA);
    f.store.put_secret(&renewed, BASE);
    assert_eq!(served(&f.store, ALPHA), Some(leaf(&renewed)));
    f.store.remove_secret(&renewed.name);
    assert_eq!(served(&f.store, ALPHA), None);
    assert_eq!(f.metrics.certificates.get(), 0);
}

#[test]
fn secrets_breaking_the_contract_are_refused() {
    let f = fixture();
    let outside = {
        let mut s = secret(&f.ca, Purpose::Serving, ALPHA);
        s.hostname = Some("alpha.example.com".into());
        s.name = secret_name(Purpose::Serving, "alpha.example.com");
        s
    };
    let base_itself = {
        let mut s = secret(&f.ca, Purpose::Serving, ALPHA);
        s.hostname = Some(BASE.into());
        s.name = secret_name(Purpose::Serving, BASE);
        s
    };
    let lookalike = {
        let mut s = secret(&f.ca, Purpose::Serving, ALPHA);
        s.hostname = Some("alpha.evilkanmon.test".into());
        s.name = secret_name(Purpose::Serving, "alpha.evilkanmon.test");
        s
    };
    let misnamed = {
        let mut s = secret(&f.ca, Purpose::Serving, ALPHA);
        s.name = secret_name(Purpose::Serving, BETA);
        s
    };
    let opaque = {
        let mut s = secret(&f.ca, Purpose::Serving, ALPHA);
        s.secret_type = Some("Opaque".into());
        s
    };
    let unlabelled = {
        let mut s = secret(&f.ca, Purpose::Serving, ALPHA);
        s.purpose = Some("yes".into());
        s
    };
    let anonymous = {
        let mut s = secret(&f.ca, Purpose::Serving, ALPHA);
        s.hostname = None;
        s
    };
    for s in [
        outside,
        base_itself,
        lookalike,
        misnamed,
        opaque,
        unlabelled,
        anonymous,
    ] {
        let report = f.store.put_secret(&s, BASE);
        assert!(
            matches!(report.errors[..], [CertError::Refused { .. }]),
            "{s:?}: {:?}",
            report.errors
        );
    }
    assert!(f.store.is_empty());
    assert_eq!(f.metrics.cert_errors.get(), 7);
}

#[test]
fn a_challenge_secret_is_kept_apart_from_the_serving_certificates() {
    let f = fixture();
    let challenge = secret(&f.ca, Purpose::AcmeChallenge, ALPHA);
    f.store.put_secret(&challenge, BASE);
    assert!(f.store.find(ALPHA).is_none());
    let found = f.store.find_challenge(ALPHA).expect("challenge loaded");
    assert_eq!(found.cert[0].to_vec(), leaf(&challenge));
    f.store.remove_secret(&challenge.name);
    assert!(f.store.find_challenge(ALPHA).is_none());
}

#[test]
fn a_relist_drops_what_is_gone_and_keeps_a_bad_version_s_predecessor() {
    let f = fixture();
    let alpha = secret(&f.ca, Purpose::Serving, ALPHA);
    let beta = secret(&f.ca, Purpose::Serving, BETA);
    f.store
        .replace_secrets(&[alpha.clone(), beta.clone()], BASE);
    assert_eq!(f.store.len(), 2);
    let mut broken_alpha = alpha.clone();
    broken_alpha.crt = b"garbage".to_vec();
    let report = f.store.replace_secrets(&[broken_alpha], BASE);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(served(&f.store, ALPHA), Some(leaf(&alpha)));
    assert_eq!(served(&f.store, BETA), None, "beta was deleted meanwhile");
}

#[test]
fn the_directory_and_the_secrets_never_drop_each_other() {
    let f = fixture();
    f.ca.issue(f.store.dir(), BETA).unwrap();
    f.ca.issue(f.store.dir(), ALPHA).unwrap();
    f.store.reload();
    let from_dir = served(&f.store, ALPHA).unwrap();
    let alpha = secret(&f.ca, Purpose::Serving, ALPHA);
    f.store.put_secret(&alpha, BASE);
    // The Secret wins for its hostname; the directory's other pair stays.
    assert_eq!(served(&f.store, ALPHA), Some(leaf(&alpha)));
    assert!(served(&f.store, BETA).is_some());
    // A reload of the directory keeps the Secret's certificate.
    f.store.reload();
    assert_eq!(served(&f.store, ALPHA), Some(leaf(&alpha)));
    // Its deletion uncovers the directory's pair again.
    f.store.remove_secret(&alpha.name);
    assert_eq!(served(&f.store, ALPHA), Some(from_dir));
}
