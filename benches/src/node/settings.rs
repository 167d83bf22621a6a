//! What kanmon gave the node: the server key it enforces on `/ws` and the report of
//! `GET /kanmon/received` (runtime variables, config, secret config masked).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use http::{header, HeaderMap, Uri};

/// The config entry holding the server key (Nakama's `socket.server_key`).
pub(super) const SERVER_KEY_ENTRY: &str = "KANMON_CONFIG_SOCKET_SERVER_KEY";
/// The config entry listing (comma-separated) which entries are secret.
pub(super) const SECRET_KEYS_ENTRY: &str = "KANMON_SECRET_KEYS";
/// The query parameter a client may carry the server key in instead of HTTP Basic.
pub const SERVER_KEY_PARAM: &str = "server_key";

/// What the node received at start.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// The server key `/ws` clients must present; `None`: `/ws` is open (a node started
    /// without kanmon, e.g. by the load harness).
    pub server_key: Option<String>,
    /// `GET /kanmon/received`: `{"vars", "config", "secret_keys"}` with secret values
    /// replaced by `<secret: N bytes>`.
    pub report: serde_json::Value,
}

impl Received {
    /// From the config file's entries and the `KANMON_VAR_*` variables of the environment.
    pub fn new(
        entries: &BTreeMap<String, String>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let secret: BTreeSet<&str> = entries
            .get(SECRET_KEYS_ENTRY)
            .map(|s| s.split(',').filter(|k| !k.is_empty()).collect())
            .unwrap_or_default();
        let config: BTreeMap<&str, String> = entries
            .iter()
            .filter(|(k, _)| k.starts_with("KANMON_CONFIG_"))
            .map(|(k, v)| {
                let shown = if secret.contains(k.as_str()) {
                    format!("<secret: {} bytes>", v.len())
                } else {
                    v.clone()
                };
                (k.as_str(), shown)
            })
            .collect();
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("KANMON_VAR_"))
            .collect();
        Self {
            server_key: entries
                .get(SERVER_KEY_ENTRY)
                .filter(|k| !k.is_empty())
                .cloned(),
            report: serde_json::json!({
                "vars": vars,
                "config": config,
                "secret_keys": secret,
                "database_url": entries.contains_key("DATABASE_URL"),
            }),
        }
    }

    /// Whether a `/ws` request may pass: no key configured, or the key as the HTTP Basic
    /// username (Nakama's server-key form) or as `?server_key=`.
    pub fn allows(&self, headers: &HeaderMap, uri: &Uri) -> bool {
        let Some(want) = &self.server_key else {
            return true;
        };
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|raw| String::from_utf8(raw).ok())
            .map(|user_pass| user_pass.split(':').next().unwrap_or_default().to_string());
        let query = uri.query().and_then(|q| {
            q.split('&')
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| *k == SERVER_KEY_PARAM)
                .map(|(_, v)| v.to_string())
        });
        [basic, query]
            .into_iter()
            .flatten()
            .any(|got| same(got.as_bytes(), want.as_bytes()))
    }
}

/// Compares without stopping at the first difference, so the time taken says nothing about
/// how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received() -> Received {
        let entries = BTreeMap::from([
            (SERVER_KEY_ENTRY.to_string(), "sk-123".to_string()),
            ("KANMON_CONFIG_MODE".to_string(), "pvp".to_string()),
            (
                "KANMON_CONFIG_DB_PASSWORD".to_string(),
                "hunter2".to_string(),
            ),
            (
                SECRET_KEYS_ENTRY.to_string(),
                format!("{SERVER_KEY_ENTRY},KANMON_CONFIG_DB_PASSWORD"),
            ),
        ]);
        Received::new(&entries, [("KANMON_VAR_LEVEL".into(), "3".into())])
    }

    #[test]
    fn the_report_masks_secret_values() {
        let r = received().report;
        assert_eq!(r["config"]["KANMON_CONFIG_MODE"], "pvp");
        assert_eq!(
            r["config"]["KANMON_CONFIG_DB_PASSWORD"],
            "<secret: 7 bytes>"
        );
        assert_eq!(r["vars"]["KANMON_VAR_LEVEL"], "3");
        let text = r.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("sk-123"),
            "{text}"
        );
    }

    #[test]
    fn only_the_right_server_key_passes() {
        let r = received();
        let uri: Uri = "/ws".parse().unwrap();
        let mut h = HeaderMap::new();
        assert!(!r.allows(&h, &uri));
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
            .parse()
            .unwrap()
        };
        h.insert(header::AUTHORIZATION, basic("sk-12:"));
        assert!(!r.allows(&h, &uri));
        h.insert(header::AUTHORIZATION, basic("sk-123:"));
        assert!(r.allows(&h, &uri));
        let q: Uri = "/ws?format=json&server_key=sk-123".parse().unwrap();
        assert!(r.allows(&HeaderMap::new(), &q));
        let open = Received::default();
        assert!(open.allows(&HeaderMap::new(), &uri));
    }
}
