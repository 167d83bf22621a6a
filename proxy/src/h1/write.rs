//! Writes with a deadline for the whole write, shared by the HTTP/1.1 lane and the WebSocket
//! tunnel (`limits.write_timeout`).

use std::time::Duration;

use tokio::{
    io::{AsyncWrite, AsyncWriteExt},
    time::timeout,
};

/// Why a write with a deadline did not go out.
#[derive(Debug, thiserror::Error)]
pub enum WriteFail {
    /// The peer closed or reset the connection.
    #[error("{0}")]
    Closed(#[from] std::io::Error),
    /// The write did not finish within its deadline.
    #[error("the write did not finish within the write timeout")]
    TimedOut,
}

/// Writes and flushes `bytes` within `limit` for the whole of them: a peer that reads a byte
/// now and then cannot stretch a write the way a deadline per syscall would let it.
pub async fn write_within<S: AsyncWrite + Unpin>(
    to: &mut S,
    bytes: &[u8],
    limit: Duration,
) -> Result<(), WriteFail> {
    let write = async {
        to.write_all(bytes).await?;
        to.flush().await
    };
    match timeout(limit, write).await {
        Ok(written) => Ok(written?),
        Err(_) => Err(WriteFail::TimedOut),
    }
}
