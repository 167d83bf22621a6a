use super::*;

fn limits(idle: Duration) -> Limits {
    Limits {
        idle,
        write: Duration::from_secs(30),
    }
}

/// A connected loopback TCP pair.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let connect = TcpStream::connect(listener.local_addr().unwrap());
    let (accepted, connected) = tokio::join!(listener.accept(), connect);
    (accepted.unwrap().0, connected.unwrap())
}

#[tokio::test]
async fn relay_copies_both_ways_and_ends_when_both_close() {
    let (client, mut client_peer) = tokio::io::duplex(64);
    let (node, mut node_peer) = tcp_pair().await;
    let (_away, away) = watch::channel(false);
    let task = tokio::spawn(relay(
        client,
        node,
        limits(Duration::from_secs(30)),
        FrameBoundary::default(),
        away,
    ));
    client_peer.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    node_peer.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    node_peer.write_all(b"pong").await.unwrap();
    client_peer.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    // A large message from the client arrives whole, across many small reads.
    let upload = vec![9u8; 50_000];
    client_peer.write_all(&upload).await.unwrap();
    let mut got = vec![0u8; upload.len()];
    node_peer.read_exact(&mut got).await.unwrap();
    assert_eq!(got, upload);
    // A large message from the node arrives whole, across several reads.
    let big = vec![7u8; 100_000];
    node_peer.write_all(&big).await.unwrap();
    let mut got = vec![0u8; big.len()];
    client_peer.read_exact(&mut got).await.unwrap();
    assert_eq!(got, big);
    drop(client_peer);
    drop(node_peer);
    assert_eq!(task.await.unwrap(), TunnelEnd::Closed);
}

#[tokio::test(start_paused = true)]
async fn relay_ends_idle_tunnels() {
    let (client, _client_peer) = tokio::io::duplex(64);
    let (node, _node_peer) = tcp_pair().await;
    let (_away, away) = watch::channel(false);
    let end = relay(
        client,
        node,
        limits(Duration::from_secs(300)),
        FrameBoundary::default(),
        away,
    )
    .await;
    assert_eq!(end, TunnelEnd::Idle);
}

#[test]
fn idle_clock_ends_after_four_quiet_ticks_and_traffic_restarts_the_count() {
    let limit = Duration::from_secs(40);
    let start = Instant::now();
    let mut clock = IdleClock::new(limit);
    let mut now = start;
    // Traffic in every tick keeps the tunnel alive indefinitely.
    for _ in 0..20 {
        now = clock.next_wake(now);
        clock.active();
        assert!(!clock.expired(now));
    }
    // Then silence: three quiet wake-ups are not enough, the fourth ends it.
    let last_byte = now;
    for _ in 0..3 {
        now = clock.next_wake(now);
        assert!(!clock.expired(now));
    }
    now = clock.next_wake(now);
    assert!(clock.expired(now));
    let quiet = now - last_byte;
    assert!(quiet >= limit && quiet <= limit + limit / 4, "{quiet:?}");
}

#[test]
fn idle_clock_linger_is_a_hard_deadline_despite_traffic() {
    let start = Instant::now();
    let mut clock = IdleClock::new(Duration::from_secs(3600));
    let wake = clock.linger(start);
    assert_eq!(
        wake,
        start + LINGER,
        "the next wake-up is the linger deadline"
    );
    clock.active();
    assert!(!clock.expired(start + LINGER / 2));
    clock.active();
    assert!(clock.expired(start + LINGER));
    // A later linger never extends the deadline.
    assert_eq!(clock.linger(start + LINGER), start + LINGER);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_at_the_write_limit() {
    // A client that has read nothing: its side of the pipe fills and stays full.
    let (client, _client_peer) = tokio::io::duplex(1024);
    let (node, mut node_peer) = tcp_pair().await;
    let (_away, away) = watch::channel(false);
    let limits = Limits {
        idle: Duration::from_secs(3600),
        write: Duration::from_millis(300),
    };
    let task = tokio::spawn(relay(client, node, limits, FrameBoundary::default(), away));
    // The node keeps sending (well past what the pipe holds) until the tunnel gives up.
    let flood = tokio::spawn(async move {
        let chunk = [0u8; 4096];
        for _ in 0..16 {
            if node_peer.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let end = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the tunnel gives up on the client");
    assert_eq!(end.unwrap(), TunnelEnd::ClientStalled);
    flood.abort();
}

#[tokio::test]
async fn going_away_waits_for_a_frame_boundary_then_sends_1001() {
    let (client, mut client_peer) = tokio::io::duplex(1 << 16);
    let (node, mut node_peer) = tcp_pair().await;
    let (away_tx, away) = watch::channel(false);
    let task = tokio::spawn(relay(
        client,
        node,
        limits(Duration::from_secs(30)),
        FrameBoundary::default(),
        away,
    ));
    // The node is in the middle of a 10-byte text frame when shutdown comes.
    node_peer
        .write_all(&[0x81, 10, b'h', b'e', b'l'])
        .await
        .unwrap();
    let mut got = [0u8; 5];
    client_peer.read_exact(&mut got).await.unwrap();
    away_tx.send_replace(true);
    // The rest of the frame still arrives whole, and only then the Close frame.
    node_peer.write_all(b"lo worl").await.unwrap();
    let mut rest = [0u8; 7 + 4];
    client_peer.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest[..7], b"lo worl");
    assert_eq!(&rest[7..], &CLOSE_GOING_AWAY);
    // The client answers and hangs up; the tunnel ends as going away.
    drop(client_peer);
    assert_eq!(task.await.unwrap(), TunnelEnd::GoingAway);
}
