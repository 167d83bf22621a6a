//! The real local receivers of the notification tests: a webhook listener (answering 500 a
//! given number of times, then 200) with an HMAC check of its own, and Python's aiosmtpd as the
//! SMTP sink (installed by `scripts/setup.sh`), started on loopback and stopped by PID.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode},
    routing::post,
    Router,
};
use hmac::{Hmac, Mac};
use tokio::sync::mpsc;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) signature: String,
    pub(crate) event: String,
    pub(crate) delivery: String,
    pub(crate) body: Vec<u8>,
}

/// A webhook receiver on loopback: answers `failures` requests with 500, then 200.
pub(crate) async fn receiver(failures: usize) -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let count = Arc::new(Mutex::new(0usize));
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let (tx, count) = (tx.clone(), count.clone());
            async move {
                let h = |k: &str| {
                    headers
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                let got = Received {
                    signature: h("kanmon-signature"),
                    event: h("kanmon-event"),
                    delivery: h("kanmon-delivery"),
                    body: body.to_vec(),
                };
                // A test that stopped listening changes nothing about the answer.
                tx.send(got).ok();
                let mut n = count.lock().unwrap();
                *n += 1;
                if *n <= failures {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), rx)
}

pub(crate) async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .expect("the receiver heard nothing within 15 s")
        .expect("receiver open")
}

/// Checks `Kanmon-Signature: t=<unix>,v1=<hex>` over `t.body` with the secret, computed here
/// independently of the control plane's code.
pub(crate) fn verify(secret: &str, r: &Received) {
    let (t, v1) = r
        .signature
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("bad signature header {:?}", r.signature));
    let unix: u64 = t.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        now.abs_diff(unix) < 60,
        "signature time {unix} vs now {now}"
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&r.body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v1, hex, "signature does not verify");
}

/// Python's aiosmtpd printing every message it gets; killed by PID on drop.
pub(crate) struct SmtpSink {
    child: Child,
    pub(crate) port: u16,
    lines: std::sync::mpsc::Receiver<String>,
}

impl SmtpSink {
    /// aiosmtpd on a free loopback port, with `extra` arguments (TLS files).
    pub(crate) fn start(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("python3")
            .args(["-u", "-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 -m aiosmtpd (scripts/setup.sh installs it)");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self { child, port, lines };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("aiosmtpd exited: {status} (is it installed? scripts/setup.sh)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("aiosmtpd did not listen on {port}");
    }

    /// Lines until one contains `needle` (bounded); returns them all.
    pub(crate) fn until(&self, needle: &str) -> String {
        let mut seen = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if line.contains(needle) {
                        return seen;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("the SMTP sink never printed {needle:?}; got:\n{seen}");
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Err(e) = self.child.kill().and_then(|_| self.child.wait()) {
            eprintln!("stopping aiosmtpd (pid {}): {e}", self.child.id());
        }
    }
}
