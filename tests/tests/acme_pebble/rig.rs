//! The processes of a pebble test on loopback: a game node, the edge (file discovery, routing
//! HOST to the node; with a plain-HTTP listener when HTTP-01 is tested), pebble-challtestsrv as
//! pebble's DNS (every name is 127.0.0.1, so the validator connects to the edge) and pebble,
//! validating against the edge's TLS port (`tlsPort`) and its plain listener (`httpPort`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use kanmon_control::certs::acme::{AcmeConfig, Challenge};
use kanmon_tests::{free_port, node_program, workspace_bin};

use super::VALIDITY;

/// Stops a child process by its PID when the test ends, however it ends.
pub(crate) struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> Proc {
    Proc(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("process starts"),
    )
}

/// Waits (bounded) until something accepts TCP connections on `addr`.
pub(crate) async fn listening(addr: SocketAddr, what: &str) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} never listened on {addr}");
}

/// A test CA and a certificate for pebble's own HTTPS endpoints on 127.0.0.1.
fn pebble_tls(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("pebble.crt"), leaf.pem()).unwrap();
    std::fs::write(dir.join("pebble.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("pebble-ca.crt"), ca_cert.pem()).unwrap();
    dir.join("pebble-ca.crt")
}

/// An HTTPS client trusting only `ca`.
pub(crate) fn https(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

/// Everything but pebble itself, which a test starts and stops ([`Rig::start_pebble`]).
pub(crate) struct Rig {
    /// The temporary directory of it all (removed last).
    pub(crate) dir: tempfile::TempDir,
    /// The edge's `cert_dir`.
    pub(crate) cert_dir: PathBuf,
    /// The edge's TLS listener.
    pub(crate) edge: SocketAddr,
    /// The edge's plain-HTTP listener (HTTP-01 rigs only).
    pub(crate) http: Option<SocketAddr>,
    /// pebble's ACME and management listeners.
    pub(crate) acme: SocketAddr,
    /// pebble's management listener (roots, certificate status).
    pub(crate) mgmt: SocketAddr,
    /// The root pebble's own HTTPS is signed by.
    pub(crate) pebble_ca: PathBuf,
    log: PathBuf,
    _procs: Vec<Proc>,
}

impl Rig {
    /// Starts the node, the edge and pebble's DNS; `None` (saying so) without pebble.
    pub(crate) async fn start(challenge: Challenge) -> Option<Rig> {
        Self::start_with(challenge, true, None).await
    }

    /// As [`Rig::start`]. Without `static_node` there is no node and the edge's nodes file
    /// (`nodes.toml` in the rig's directory) starts empty, for a `kanmon serve --nodes-file`
    /// to write; with `secrets` (a kubeconfig and a namespace) the edge also serves the
    /// certificate Secrets of that namespace (Kubernetes discovery, nothing routed).
    pub(crate) async fn start_with(
        challenge: Challenge,
        static_node: bool,
        secrets: Option<(&Path, &str)>,
    ) -> Option<Rig> {
        if Command::new("pebble").arg("-version").output().is_err() {
            eprintln!("SKIPPED: pebble is not installed (scripts/setup.sh test installs it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cert_dir = d.join("certs");
        std::fs::create_dir_all(&cert_dir).unwrap();
        let pebble_ca = pebble_tls(d);
        let (acme, mgmt, dns, chall_mgmt) = (free_port(), free_port(), free_port(), free_port());
        let (edge, admin, node, grpc) = (free_port(), free_port(), free_port(), free_port());
        let http = (challenge == Challenge::Http01).then(free_port);
        let mut procs = Vec::new();
        let nodes = d.join("nodes.toml");
        if static_node {
            procs.push(spawn(
                Command::new(node_program())
                    .args(["node", "--quiet", "--listen", &node.to_string()])
                    .args(["--grpc-listen", &grpc.to_string()]),
            ));
            std::fs::write(
                &nodes,
                format!(
                    "[[deployment]]\ninstance = \"alpha\"\nzone = \"us-east1\"\nnodes = [{{ id = \
                     \"alpha-0\", addr = \"{node}\", state = \"ready\" }}]\n"
                ),
            )
            .unwrap();
        } else {
            std::fs::write(&nodes, "").unwrap();
        }
        let http_line = http.map_or(String::new(), |h| format!("http = \"{h}\"\n"));
        let discovery = match secrets {
            None => format!("kind = \"file\"\npath = \"{}\"\n", nodes.display()),
            Some((kubeconfig, ns)) => format!(
                "kind = \"kubernetes\"\nkubeconfig = \"{}\"\ncertificate_namespace = \"{ns}\"\n",
                kubeconfig.display()
            ),
        };
        std::fs::write(
            d.join("proxy.toml"),
            format!(
                "[listen]\ntls = \"{edge}\"\nadmin = \"{admin}\"\n{http_line}[tls]\ncert_dir = \
                 \"{}\"\n[discovery]\n{discovery}[shutdown]\nupgrade_sock = \"{}\"\n",
                cert_dir.display(),
                d.join("upgrade.sock").display()
            ),
        )
        .unwrap();
        procs.push(spawn(
            Command::new(workspace_bin("kanmon-proxy"))
                .arg("--config")
                .arg(d.join("proxy.toml")),
        ));
        procs.push(spawn(Command::new("pebble-challtestsrv").args([
            "-dns01",
            &dns.to_string(),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &chall_mgmt.to_string(),
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
        ])));
        let config = serde_json::json!({ "pebble": {
            "listenAddress": acme.to_string(),
            "managementListenAddress": mgmt.to_string(),
            "certificate": d.join("pebble.crt"),
            "privateKey": d.join("pebble.key"),
            "httpPort": http.unwrap_or_else(free_port).port(),
            "tlsPort": edge.port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": VALIDITY,
        }});
        std::fs::write(d.join("pebble.json"), format!("{config}\n")).unwrap();
        std::fs::write(d.join("dns.port"), dns.port().to_string()).unwrap();
        listening(chall_mgmt, "pebble-challtestsrv").await;
        listening(dns, "pebble-challtestsrv's DNS").await;
        listening(edge, "the edge").await;
        if let Some(h) = http {
            listening(h, "the edge's plain-HTTP listener").await;
        }
        if static_node {
            listening(node, "the node").await;
        }
        Some(Rig {
            log: d.join("pebble.log"),
            dir,
            cert_dir,
            edge,
            http,
            acme,
            mgmt,
            pebble_ca,
            _procs: procs,
        })
    }

    /// Starts pebble (its log appended to `pebble.log`) and waits until it listens.
    pub(crate) async fn start_pebble(&self) -> Proc {
        let d = self.dir.path();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let dns = std::fs::read_to_string(d.join("dns.port")).unwrap();
        let pebble = Proc(
            Command::new("pebble")
                .arg("-config")
                .arg(d.join("pebble.json"))
                .args(["-dnsserver", &format!("127.0.0.1:{dns}"), "-strict=false"])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0")
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("pebble starts"),
        );
        listening(self.acme, "pebble").await;
        listening(self.mgmt, "pebble's management").await;
        pebble
    }

    /// pebble's log so far.
    pub(crate) fn pebble_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The keeper's configuration for this pebble.
    pub(crate) fn acme_config(&self, challenge: Challenge) -> AcmeConfig {
        let mut cfg = AcmeConfig::new(&format!("https://{}/dir", self.acme));
        cfg.contact = Some("ops@kanmon.test".into());
        cfg.ca_root = Some(self.pebble_ca.clone());
        cfg.challenge_settle = Duration::from_millis(500);
        cfg.order_timeout = Duration::from_secs(60);
        cfg.challenge = challenge;
        cfg
    }

    /// The root pebble signs certificates with, written to a file.
    pub(crate) async fn root(&self) -> PathBuf {
        let root = self.dir.path().join("pebble-root.crt");
        let pem = https(&self.pebble_ca)
            .get(format!("https://{}/roots/0", self.mgmt))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        std::fs::write(&root, pem).unwrap();
        root
    }
}
