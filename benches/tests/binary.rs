//! The `kanmon-bench node` binary contract other engineers' scripts rely on: the first stdout
//! line names the bound address, each WebSocket is logged as `ws-connect node=ID`, and SIGTERM
//! closes WebSockets with 1001 and exits cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const STEP: Duration = Duration::from_secs(10);

/// Kills the child if the test fails half-way, so no node outlives the test.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            if let Err(e) = self.0.kill() {
                eprintln!("could not kill node: {e}");
            }
            let _status = self.0.wait();
        }
    }
}

#[tokio::test]
async fn node_binary_prints_address_logs_connections_and_stops_on_sigterm() -> anyhow::Result<()> {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_kanmon-bench"))
            .args(["node", "--listen", "127.0.0.1:0", "--node-id", "bin-0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let stdout = child.0.stdout.take().expect("piped stdout");
    // Read stdout lines on a thread and hand them over a channel, so every wait is bounded.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = tokio::time::timeout(STEP, lines.recv())
        .await?
        .expect("first line");
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let tcp = TcpStream::connect(&addr).await?;
    let (mut ws, _) = tokio::time::timeout(
        STEP,
        tokio_tungstenite::client_async(format!("ws://{addr}/ws?token=x"), tcp),
    )
    .await??;
    ws.send(Message::text("whoami")).await?;
    let reply = tokio::time::timeout(STEP, ws.next())
        .await?
        .expect("reply")?;
    assert_eq!(reply, Message::text("bin-0"));
    let logged = tokio::time::timeout(STEP, lines.recv())
        .await?
        .expect("log line");
    assert_eq!(logged, "ws-connect node=bin-0");

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()?;
    assert!(status.success());
    match tokio::time::timeout(STEP, ws.next())
        .await?
        .expect("close")?
    {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    }
    while let Some(Ok(_)) = tokio::time::timeout(STEP, ws.next()).await? {}
    let exit = tokio::task::spawn_blocking(move || child.0.wait()).await??;
    assert!(exit.success(), "{exit:?}");
    Ok(())
}
