//! The nodes file of file discovery (DESIGN.md): `[[deployment]]` tables with their nodes.
//!
//! Written by operators or by `kanmon serve`; parsed strictly so a typo never silently
//! removes a node: unknown keys, bad names, duplicate instances or node ids are errors that
//! name the line, key or deployment.

use std::{collections::HashSet, net::SocketAddr};

use kanmon_router::{DeploymentSpec, InstanceName, NodeSpec, NodeState, Zone};
use serde::{Deserialize, Serialize};

/// Why a nodes file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodesFileError {
    /// Malformed TOML, an unknown key or a wrongly typed value (message has line and key).
    #[error("{0}")]
    Parse(String),
    /// A deployment's instance or zone breaks the naming rules.
    #[error("deployment #{index}: {source}")]
    Name {
        /// Position of the `[[deployment]]` table, from 1.
        index: usize,
        /// The broken rule.
        #[source]
        source: kanmon_router::NameError,
    },
    /// The same instance appears twice.
    #[error("instance {0:?} is listed more than once")]
    DuplicateInstance(String),
    /// The same node id appears twice within a deployment.
    #[error("instance {0:?}: node id {1:?} is listed more than once")]
    DuplicateNode(String, String),
}

/// The file as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodesFile {
    /// The deployments.
    #[serde(default)]
    pub deployment: Vec<FileDeployment>,
}

/// One `[[deployment]]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileDeployment {
    /// Instance name.
    pub instance: String,
    /// Zone.
    pub zone: String,
    /// Nodes.
    #[serde(default)]
    pub nodes: Vec<FileNode>,
    /// Let a deployment with no ready node use a draining one (development deployments).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fallback_to_draining: bool,
    /// Client networks (CIDRs) that may reach the deployment's console; empty or absent: the
    /// console is closed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub console_allow: Vec<ipnet::IpNet>,
}

/// One node entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileNode {
    /// Node id.
    pub id: String,
    /// HTTP/WebSocket address.
    pub addr: SocketAddr,
    /// gRPC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<SocketAddr>,
    /// Console address (Nakama's 7351).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<SocketAddr>,
    /// State (default `ready`).
    #[serde(default = "ready")]
    pub state: FileState,
}

fn ready() -> FileState {
    FileState::Ready
}

/// Node state as written in the file.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// Takes new connections.
    Ready,
    /// No new connections.
    Draining,
    /// Not serving.
    Unhealthy,
}

impl From<FileState> for NodeState {
    fn from(s: FileState) -> Self {
        match s {
            FileState::Ready => NodeState::Ready,
            FileState::Draining => NodeState::Draining,
            FileState::Unhealthy => NodeState::Unhealthy,
        }
    }
}

impl From<NodeState> for FileState {
    fn from(s: NodeState) -> Self {
        match s {
            NodeState::Ready => FileState::Ready,
            NodeState::Draining => FileState::Draining,
            NodeState::Unhealthy => FileState::Unhealthy,
        }
    }
}

/// Parses and validates a nodes file into table specs; `max_connections` is applied to
/// every deployment.
pub fn parse(
    text: &str,
    max_connections: Option<u64>,
) -> Result<Vec<DeploymentSpec>, NodesFileError> {
    let file: NodesFile = toml::from_str(text).map_err(|e| NodesFileError::Parse(e.to_string()))?;
    let mut instances = HashSet::new();
    let mut specs = Vec::with_capacity(file.deployment.len());
    for (i, d) in file.deployment.into_iter().enumerate() {
        let name_err = |source| NodesFileError::Name {
            index: i + 1,
            source,
        };
        let instance = InstanceName::parse(&d.instance).map_err(name_err)?;
        let zone = Zone::parse(&d.zone).map_err(name_err)?;
        if !instances.insert(instance.clone()) {
            return Err(NodesFileError::DuplicateInstance(instance.to_string()));
        }
        let mut ids = HashSet::new();
        for n in &d.nodes {
            if !ids.insert(n.id.as_str()) {
                return Err(NodesFileError::DuplicateNode(
                    instance.to_string(),
                    n.id.clone(),
                ));
            }
        }
        specs.push(DeploymentSpec {
            instance,
            zone,
            nodes: d
                .nodes
                .into_iter()
                .map(|n| NodeSpec {
                    id: n.id,
                    addr: n.addr,
                    grpc: n.grpc,
                    console: n.console,
                    state: n.state.into(),
                })
                .collect(),
            fallback_to_draining: d.fallback_to_draining,
            max_connections,
            console_allow: d.console_allow,
        });
    }
    Ok(specs)
}

/// Renders specs back into the file format (used by the control plane to publish states).
pub fn render(specs: &[DeploymentSpec]) -> Result<String, toml::ser::Error> {
    let file = NodesFile {
        deployment: specs
            .iter()
            .map(|d| FileDeployment {
                instance: d.instance.to_string(),
                zone: d.zone.to_string(),
                fallback_to_draining: d.fallback_to_draining,
                console_allow: d.console_allow.clone(),
                nodes: d
                    .nodes
                    .iter()
                    .map(|n| FileNode {
                        id: n.id.clone(),
                        addr: n.addr,
                        grpc: n.grpc,
                        console: n.console,
                        state: n.state.into(),
                    })
                    .collect(),
            })
            .collect(),
    };
    toml::to_string(&file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[[deployment]]
instance = "alpha"
zone = "us-east1"
nodes = [
  { id = "alpha-0", addr = "127.0.0.1:7350", grpc = "127.0.0.1:7349", state = "ready" },
  { id = "alpha-1", addr = "127.0.0.1:7351", state = "draining" },
]
"#;

    #[test]
    fn design_example() {
        let specs = parse(EXAMPLE, None).unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].nodes[1].state, NodeState::Draining);
        assert_eq!(specs[0].nodes[0].grpc.unwrap().port(), 7349);
        let again = parse(&render(&specs).unwrap(), None).unwrap();
        assert_eq!(again, specs);
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let e = parse(
            "[[deployment]]\ninstance = \"alpha\"\nzone = \"z\"\ncolour = 1\n",
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("colour") && e.to_string().contains("line 4"),
            "{e}"
        );
        let e = parse("[[deployment]]\ninstance = \"a\"\nzone = \"z\"\n", None).unwrap_err();
        assert!(
            e.to_string().contains("deployment #1") && e.to_string().contains("3 to 63"),
            "{e}"
        );
        let dup = format!("{EXAMPLE}\n[[deployment]]\ninstance = \"alpha\"\nzone = \"eu-west1\"\n");
        assert_eq!(
            parse(&dup, None).unwrap_err(),
            NodesFileError::DuplicateInstance("alpha".into())
        );
        let e = parse("[[deployment]]\ninstance = \"alpha\"\nzone = \"z\"\nnodes = [{ id = \"a\", addr = \"nope\" }]\n", None).unwrap_err();
        assert!(matches!(e, NodesFileError::Parse(_)), "{e}");
        let e = parse("[[deployment]]\ninstance = \"alpha\"\nzone = \"z\"\nnodes = [{ id = \"a\", addr = \"127.0.0.1:1\", state = \"sleepy\" }]\n", None).unwrap_err();
        assert!(
            e.to_string().contains("sleepy") || e.to_string().contains("state"),
            "{e}"
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".*") {
            let _ = parse(&s, None);
        }
    }
}
