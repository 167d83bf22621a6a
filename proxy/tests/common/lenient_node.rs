//! A test node that parses HTTP/1.1 the way Go's `net/http` does (the game nodes are Go
//! programs), and more leniently where Go has been lenient in the past, so tests can see
//! request smuggling that a strict node (hyper) would refuse on its own:
//! - a line ends at LF, a CR before it is dropped (a bare LF ends a line);
//! - a header line starting with whitespace continues the previous one (obs-fold);
//! - `Transfer-Encoding` whose last coding is `chunked` frames by chunks and wins over
//!   `Content-Length`; any other `Transfer-Encoding` is ignored (the TE.TE family); of
//!   several `Content-Length`s the first counts;
//! - chunk-size lines lose trailing whitespace and everything from `;`; data may end in a
//!   bare LF; trailers end at the first empty line.
//!
//! Every request line it parses is recorded with the `Host` it saw; each request is
//! answered `200 ok`, kept alive unless it asked to close. A request it cannot parse gets
//! 400 and a close, like Go.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// A request as the node parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub host: Option<String>,
    /// Every header line (name lower-cased, value trimmed).
    pub headers: Vec<(String, String)>,
}

pub struct LenientNode {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl LenientNode {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&record)));
            }
        });
        Self { addr, seen }
    }

    /// Every request parsed so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Bytes of one connection, read on demand.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

/// Most bytes a line may have (Go's default header limit is 1 MiB; any bound will do).
const MAX_LINE: usize = 64 * 1024;

impl Conn {
    /// Reads one line, ending at LF, without its LF and trailing CR. `None`: closed or over.
    async fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(n) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let mut line = self.buf[self.pos..self.pos + n].to_vec();
                self.pos += n + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Some(line);
            }
            if self.buf.len() - self.pos > MAX_LINE || !self.fill().await {
                return None;
            }
        }
    }

    /// Reads `n` bytes. `false`: closed first.
    async fn skip(&mut self, mut n: u64) -> bool {
        loop {
            let have = (self.buf.len() - self.pos) as u64;
            let take = have.min(n);
            self.pos += take as usize;
            n -= take;
            if n == 0 {
                return true;
            }
            if !self.fill().await {
                return false;
            }
        }
    }

    async fn fill(&mut self) -> bool {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }
}

async fn serve(stream: TcpStream, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
        pos: 0,
    };
    loop {
        match request(&mut conn, &seen).await {
            Some(keep_alive) => {
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if conn.stream.write_all(ok).await.is_err() || !keep_alive {
                    return;
                }
            }
            None => {
                let bad =
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                let _closing = conn.stream.write_all(bad).await;
                return;
            }
        }
    }
}

/// Parses one request (recording its request line) and skips its body. `Some(keep_alive)`
/// once it is whole, `None` when it cannot be parsed or the connection ended.
async fn request(conn: &mut Conn, seen: &Mutex<Vec<Seen>>) -> Option<bool> {
    let start = conn.line().await?;
    let start = String::from_utf8_lossy(&start).into_owned();
    let mut parts = start.split(' ');
    let (method, target, proto) = (parts.next()?, parts.next()?, parts.next()?);
    if method.is_empty() || !proto.starts_with("HTTP/1.") {
        return None;
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let line = conn.line().await?;
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        if text.starts_with([' ', '\t']) {
            // obs-fold: the previous value goes on.
            let last = headers.last_mut()?;
            last.1.push(' ');
            last.1.push_str(text.trim());
            continue;
        }
        let (name, value) = text.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    // Absolute-form: the target's authority is the host (as Go's server does).
    let lower = target.to_ascii_lowercase();
    let host = if lower.starts_with("http://") || lower.starts_with("https://") {
        target.split('/').nth(2).map(str::to_string)
    } else {
        header("host")
    };
    seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        target: target.to_string(),
        host,
        headers: headers.clone(),
    });
    let chunked = header("transfer-encoding").is_some_and(|te| {
        te.rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
    });
    if chunked {
        chunked_body(conn).await?;
    } else if let Some(length) = header("content-length") {
        let length: u64 = length.trim().parse().ok()?;
        if !conn.skip(length).await {
            return None;
        }
    }
    let close = header("connection").is_some_and(|c| c.to_ascii_lowercase().contains("close"));
    Some(!close && proto == "HTTP/1.1")
}

async fn chunked_body(conn: &mut Conn) -> Option<()> {
    loop {
        let line = conn.line().await?;
        let size = line.split(|&b| b == b';').next()?.trim_ascii();
        if size.is_empty() || size.len() > 16 {
            return None;
        }
        let size = u64::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()?;
        if size == 0 {
            break;
        }
        if !conn.skip(size).await {
            return None;
        }
        // The line end after the data: CR LF, or a bare LF.
        if !conn.line().await?.is_empty() {
            return None;
        }
    }
    // Trailers, up to the first empty line.
    while !conn.line().await?.is_empty() {}
    Some(())
}
