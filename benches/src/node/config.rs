//! The node's configuration file: kanmon's local driver writes the config (secret config
//! included) and `DATABASE_URL` into a 0600 JSON file named by `KANMON_NODE_CONFIG`, instead of
//! the environment, which every process of the same user can read in `/proc/PID/environ`.

use std::{collections::BTreeMap, path::Path};

/// Why the configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a JSON object of strings (the message never quotes values).
    #[error("{path} is not a JSON object of string values (line {line}, column {column})")]
    Format {
        /// The file.
        path: String,
        /// Where decoding stopped.
        line: usize,
        /// Where decoding stopped.
        column: usize,
    },
}

/// Reads the entries of the configuration file at `path` (names as the environment would
/// have carried them: `KANMON_CONFIG_<KEY>`, `DATABASE_URL`).
pub fn read_config(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|e| ConfigError::Format {
        path: path.display().to_string(),
        line: e.line(),
        column: e.column(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_entries_and_never_echoes_values() {
        let dir = std::env::temp_dir().join(format!("kanmon-node-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        std::fs::write(
            &good,
            r#"{"DATABASE_URL":"postgres://k:pw@h/db","KANMON_CONFIG_MODE":"pvp"}"#,
        )
        .unwrap();
        let cfg = read_config(&good).unwrap();
        assert_eq!(cfg["KANMON_CONFIG_MODE"], "pvp");
        assert_eq!(cfg.len(), 2);
        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"{"DATABASE_URL": 12345678}"#).unwrap();
        let err = read_config(&bad).unwrap_err().to_string();
        assert!(!err.contains("12345678"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
