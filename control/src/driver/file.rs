//! Publishing node states to the proxy through its nodes file (`[discovery] kind = "file"`).

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    sync::Mutex,
};

use kanmon_router::{DeploymentSpec, InstanceName};

use super::{NodeStatePublisher, PublishError};

/// Keeps the whole table in memory and rewrites the file on every change: temp file in the same
/// directory, fsync, rename. The proxy's watcher therefore only ever sees a complete file, old
/// or new, never a half-written one.
#[derive(Debug)]
pub struct NodesFilePublisher {
    path: PathBuf,
    deployments: Mutex<BTreeMap<String, DeploymentSpec>>,
}

impl NodesFilePublisher {
    /// Publishes to `path` (created on the first publish).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            deployments: Mutex::new(BTreeMap::new()),
        }
    }

    fn write(&self, all: &BTreeMap<String, DeploymentSpec>) -> Result<(), PublishError> {
        let specs: Vec<DeploymentSpec> = all.values().cloned().collect();
        let text = kanmon_proxy::nodes_file::render(&specs)
            .map_err(|e| PublishError::Encode(e.to_string()))?;
        write_atomically(&self.path, text.as_bytes()).map_err(|source| PublishError::Io {
            path: self.path.display().to_string(),
            source,
        })
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let name = path
        .file_name()
        .map_or("nodes".into(), |n| n.to_string_lossy());
    let tmp = dir
        .unwrap_or(Path::new("."))
        .join(format!(".{name}.tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

impl NodeStatePublisher for NodesFilePublisher {
    fn publish(&self, spec: DeploymentSpec) -> Result<(), PublishError> {
        let mut all = self.deployments.lock().unwrap_or_else(|p| p.into_inner());
        all.insert(spec.instance.to_string(), spec);
        self.write(&all)
    }

    fn remove(&self, instance: &InstanceName) -> Result<(), PublishError> {
        let mut all = self.deployments.lock().unwrap_or_else(|p| p.into_inner());
        all.remove(instance.as_str());
        self.write(&all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{sim::running_deployment, NodeRunState},
        driver::deployment_spec,
    };

    #[test]
    fn writes_the_proxy_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.toml");
        let publisher = NodesFilePublisher::new(&path);
        let mut dep = running_deployment();
        dep.nodes[1].state = NodeRunState::Draining;
        publisher.publish(deployment_spec(&dep)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed: toml::Value = toml::from_str(&text).unwrap();
        let d = &parsed["deployment"][0];
        assert_eq!(d["instance"].as_str(), Some("alpha"));
        assert_eq!(d["zone"].as_str(), Some("us-east1"));
        assert_eq!(d["nodes"][0]["id"].as_str(), Some("alpha-0"));
        assert_eq!(d["nodes"][0]["addr"].as_str(), Some("127.0.0.1:7000"));
        assert_eq!(d["nodes"][0]["state"].as_str(), Some("ready"));
        assert_eq!(d["nodes"][1]["state"].as_str(), Some("draining"));
        publisher.remove(&dep.instance).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("alpha"), "{text}");
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temp files left behind");
    }
}
