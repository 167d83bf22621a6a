//! A driver whose nodes are tiny HTTP servers on loopback ports inside this process.
//!
//! Real sockets, real start/stop, real health checks over TCP, without needing a game-server
//! binary: used by `kanmon serve --driver loopback` (the default until the local process
//! driver exists) and by the tests. A deploy with image `crash` starts nodes that exit at once,
//! which is how CrashLoopBackOff is exercised end to end.

use std::{collections::HashMap, net::SocketAddr, sync::Mutex};

use async_trait::async_trait;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use super::{DriverError, Endpoints, NodeHealth, Processes};
use crate::domain::NodeLaunch;

/// Image name that makes a node exit right after starting.
pub const CRASH_IMAGE: &str = "crash";

#[derive(Debug)]
struct Running {
    incarnation: u64,
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct LoopbackDriver {
    nodes: Mutex<HashMap<(String, String), Running>>,
}

impl LoopbackDriver {
    /// A driver with no nodes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes a running node die as if it crashed (its listener closes; health reports it
    /// exited). Returns whether the node was running.
    pub fn crash(&self, instance: &str, node: &str) -> bool {
        let nodes = self.nodes();
        let running = nodes.get(&(instance.to_string(), node.to_string()));
        match running.and_then(|r| r.task.as_ref()) {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Running>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Answers every HTTP request on `listener` with `200 ok`, forever: the loopback nodes' server,
/// also run standalone by the hidden `kanmon demo-node` command (a process node for tests of
/// the local driver).
pub async fn serve_ok(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            // One request per connection is all a health check or smoke test needs.
            if stream.read(&mut buf).await.unwrap_or(0) > 0 {
                let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                if stream.write_all(reply).await.is_err() {
                    tracing::debug!("loopback node: client went away");
                }
            }
        });
    }
}

#[async_trait]
impl Processes for LoopbackDriver {
    async fn start_node(
        &self,
        instance: &str,
        spec: &NodeLaunch,
    ) -> Result<Endpoints, DriverError> {
        let key = (instance.to_string(), spec.id.clone());
        if let Some(r) = self.nodes().get(&key) {
            let alive = r.task.as_ref().is_some_and(|t| !t.is_finished());
            if r.incarnation == spec.incarnation && alive {
                return Ok(Endpoints {
                    addr: r.addr,
                    grpc: None,
                    console: None,
                });
            }
        }
        let listener =
            TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|source| DriverError::Start {
                    node: spec.id.clone(),
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| DriverError::Start {
            node: spec.id.clone(),
            source,
        })?;
        let task = if spec.image.as_deref() == Some(CRASH_IMAGE) {
            drop(listener);
            None
        } else {
            Some(tokio::spawn(serve_ok(listener)))
        };
        let old = self.nodes().insert(
            key,
            Running {
                incarnation: spec.incarnation,
                addr,
                task,
            },
        );
        if let Some(task) = old.and_then(|o| o.task) {
            task.abort();
        }
        Ok(Endpoints {
            addr,
            grpc: None,
            console: None,
        })
    }

    async fn stop_node(&self, instance: &str, node: &str) -> Result<(), DriverError> {
        let removed = self
            .nodes()
            .remove(&(instance.to_string(), node.to_string()));
        if let Some(task) = removed.and_then(|r| r.task) {
            task.abort();
            // Wait until the listener is really closed; a cancelled task is the expected end.
            if let Err(e) = task.await {
                if !e.is_cancelled() {
                    return Err(DriverError::Other(format!("node {node} task failed: {e}")));
                }
            }
        }
        Ok(())
    }

    async fn health(&self, instance: &str, node: &str) -> NodeHealth {
        let addr = {
            let nodes = self.nodes();
            match nodes.get(&(instance.to_string(), node.to_string())) {
                Some(Running {
                    task: Some(t),
                    addr,
                    ..
                }) if !t.is_finished() => *addr,
                _ => return NodeHealth::Exited,
            }
        };
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            return NodeHealth::NotYet;
        };
        let mut reply = Vec::new();
        let ok = stream
            .write_all(b"GET /healthcheck HTTP/1.1\r\n\r\n")
            .await
            .is_ok()
            && stream.read_to_end(&mut reply).await.is_ok()
            && reply.starts_with(b"HTTP/1.1 200");
        if ok {
            NodeHealth::Healthy
        } else {
            NodeHealth::NotYet
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::sim::running_deployment;

    #[tokio::test]
    async fn starts_checks_and_stops_real_listeners() {
        let dep = running_deployment();
        let spec = dep.launch(0, &dep.spec, 1, std::time::Duration::from_secs(30));
        let driver = LoopbackDriver::new();
        let ep = driver.start_node("alpha", &spec).await.unwrap();
        assert!(ep.addr.ip().is_loopback());
        assert_eq!(driver.health("alpha", &spec.id).await, NodeHealth::Healthy);
        // Same incarnation again: adopted, same address.
        assert_eq!(driver.start_node("alpha", &spec).await.unwrap(), ep);
        driver.stop_node("alpha", &spec.id).await.unwrap();
        assert_eq!(driver.health("alpha", &spec.id).await, NodeHealth::Exited);
        assert!(TcpStream::connect(ep.addr).await.is_err());
        let mut crash = spec.clone();
        crash.image = Some(CRASH_IMAGE.into());
        driver.start_node("alpha", &crash).await.unwrap();
        assert_eq!(driver.health("alpha", &crash.id).await, NodeHealth::Exited);
    }
}
