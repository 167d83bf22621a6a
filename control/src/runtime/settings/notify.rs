//! The `[notifications]` and `[smtp]` tables of the configuration file: retry policy, the
//! development-only loopback switch, and the SMTP server notification e-mail goes through.
//! The SMTP password is read from its own file (never written in the configuration, never in
//! argv or the environment) and never printed: [`Smtp`]'s `Debug` leaves it out.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::domain::notify::Retry;

/// How notifications are delivered.
#[derive(Debug, Clone, Default)]
pub struct NotifySettings {
    /// When failed deliveries are tried again.
    pub retry: Retry,
    /// Webhooks may reach loopback receivers (tests and development only).
    pub allow_loopback: bool,
    /// The SMTP server for e-mail subscriptions; none: e-mail subscriptions are refused.
    pub smtp: Option<Smtp>,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain, then STARTTLS, refusing a server that does not offer it (port 587).
    Starttls,
    /// No TLS: only for a relay on loopback, and never with credentials.
    None,
}

/// The SMTP server.
#[derive(Clone)]
pub struct Smtp {
    /// Host name (checked against the server's certificate).
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS mode.
    pub security: SmtpSecurity,
    /// The `From:` address.
    pub from: String,
    /// User name and password, when the server wants them.
    pub credentials: Option<(String, String)>,
    /// CA certificates (PEM) the server's certificate must chain to, besides the system's
    /// roots (a company relay with its own CA).
    pub ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("from", &self.from)
            .field("username", &self.credentials.as_ref().map(|c| &c.0))
            .finish_non_exhaustive()
    }
}

/// `[notifications]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    retry_base: Option<String>,
    retry_cap: Option<String>,
    attempts: Option<u32>,
    #[serde(default)]
    allow_loopback: bool,
}

/// `[smtp]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    host: String,
    port: Option<u16>,
    security: Option<SmtpSecurity>,
    from: String,
    username: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

/// A rule a key broke: `(key, rule)`.
type Broken = (String, String);

fn duration(key: &str, text: &str) -> Result<Duration, Broken> {
    let d = humantime::parse_duration(text).map_err(|e| (key.into(), format!("{text:?}: {e}")))?;
    if d < Duration::from_millis(10) {
        return Err((key.into(), "must be at least 10ms".into()));
    }
    Ok(d)
}

/// Validates the two tables into `out`.
pub(super) fn apply(
    raw: Option<RawNotify>,
    smtp: Option<RawSmtp>,
    out: &mut NotifySettings,
) -> Result<(), Broken> {
    if let Some(n) = raw {
        if let Some(t) = &n.retry_base {
            out.retry.base = duration("notifications.retry_base", t)?;
        }
        if let Some(t) = &n.retry_cap {
            out.retry.cap = duration("notifications.retry_cap", t)?;
        }
        if out.retry.cap < out.retry.base {
            return Err((
                "notifications.retry_cap".into(),
                "must not be shorter than retry_base".into(),
            ));
        }
        if let Some(a) = n.attempts {
            if !(1..=50).contains(&a) {
                return Err(("notifications.attempts".into(), "must be 1 to 50".into()));
            }
            out.retry.attempts = a;
        }
        out.allow_loopback = n.allow_loopback;
    }
    if let Some(s) = smtp {
        if s.host.trim().is_empty() {
            return Err(("smtp.host".into(), "must name the server".into()));
        }
        if s.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err((
                "smtp.from".into(),
                format!("{:?} is not an e-mail address", s.from),
            ));
        }
        let security = s.security.unwrap_or(SmtpSecurity::Starttls);
        let credentials = match (s.username, s.password_file) {
            (None, None) => None,
            (Some(u), Some(path)) => {
                let pw = std::fs::read_to_string(&path).map_err(|e| {
                    (
                        "smtp.password_file".to_string(),
                        format!("reading {}: {e}", path.display()),
                    )
                })?;
                Some((u, pw.trim_end_matches(['\r', '\n']).to_string()))
            }
            _ => {
                return Err((
                    "smtp.username".into(),
                    "username and password_file go together".into(),
                ))
            }
        };
        if security == SmtpSecurity::None && credentials.is_some() {
            return Err((
                "smtp.security".into(),
                "\"none\" would send the password in clear; use \"tls\" or \"starttls\"".into(),
            ));
        }
        let port = s.port.unwrap_or(match security {
            SmtpSecurity::Tls => 465,
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::None => 25,
        });
        let ca = match &s.ca_file {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    (
                        "smtp.ca_file".to_string(),
                        format!("reading {}: {e}", path.display()),
                    )
                })?;
                let certs = rustls_pemfile::certs(&mut pem.as_slice())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap_or_default();
                if certs.is_empty()
                    || lettre::transport::smtp::client::Certificate::from_pem(&pem).is_err()
                {
                    return Err((
                        "smtp.ca_file".into(),
                        format!("{} holds no PEM certificate", path.display()),
                    ));
                }
                Some(pem)
            }
        };
        out.smtp = Some(Smtp {
            host: s.host,
            port,
            security,
            from: s.from,
            credentials,
            ca,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::runtime::Settings;

    fn parse(text: &str) -> Result<Settings, String> {
        Settings::parse(text, Path::new("kanmon.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn notification_tables_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "hunter2\n").unwrap();
        let s = parse(&format!(
            "[notifications]\nretry_base = \"1s\"\nretry_cap = \"4s\"\nattempts = 3\n\
             [smtp]\nhost = \"mail.example\"\nfrom = \"Kanmon <k@example.com>\"\n\
             username = \"k\"\npassword_file = {pw:?}\n"
        ))
        .unwrap();
        let n = &s.notify;
        assert_eq!(n.retry.attempts, 3);
        let smtp = n.smtp.as_ref().unwrap();
        assert_eq!(smtp.port, 587);
        assert_eq!(smtp.credentials.as_ref().unwrap().1, "hunter2");
        assert!(!format!("{smtp:?}").contains("hunter2"));
        for (bad, key) in [
            ("[notifications]\nattempts = 0", "notifications.attempts"),
            (
                "[notifications]\nretry_base = \"5s\"\nretry_cap = \"1s\"",
                "retry_cap",
            ),
            ("[smtp]\nhost = \"m\"\nfrom = \"nope\"", "smtp.from"),
            (
                "[smtp]\nhost = \"m\"\nfrom = \"k@example.com\"\nusername = \"k\"",
                "smtp.username",
            ),
            ("[smtp]\nhost = \"m\"\nfrom = \"k@example.com\"\nport = 1\nsecurity = \"none\"\nusername = \"k\"\npassword_file = \"/dev/null\"", "smtp.security"),
            ("[notifications]\nretries = 3", "unknown field `retries`"),
            (
                "[smtp]\nhost = \"m\"\nfrom = \"k@example.com\"\nca_file = \"/dev/null\"",
                "smtp.ca_file",
            ),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }
}
