//! Removing secrets from text that is stored (operation errors) or logged.
//!
//! Two layers: the secrets the control plane knows for a deployment (its keys and secret
//! config values) are replaced wherever they appear, and shapes that carry a password whatever
//! its value (`PGPASSWORD=…` as a formatted `Command` prints it, `scheme://user:password@`) are
//! cut, so a database password the runtime never sees is still caught.

use crate::domain::Deployment;

/// What a removed secret is replaced with.
pub const SCRUBBED: &str = "<redacted>";

/// Every secret value of `dep`.
pub fn secrets_of(dep: &Deployment) -> Vec<&str> {
    [dep.keys.server_key.as_str(), dep.keys.runtime_key.as_str()]
        .into_iter()
        .chain(dep.spec.secret_config.values().map(String::as_str))
        .filter(|s| !s.is_empty())
        .collect()
}

/// `text` without any of `secrets` and without password-shaped parts.
pub fn scrub<'a>(text: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    // Longest first, so a secret that contains another is removed whole.
    let mut secrets: Vec<&str> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for s in secrets {
        out = out.replace(s, SCRUBBED);
    }
    scrub_url_passwords(&scrub_password_vars(&out))
}

/// Cuts the value after `PASSWORD=` (any prefix: `PGPASSWORD`, `DB_PASSWORD`), quoted or not.
fn scrub_password_vars(text: &str) -> String {
    const KEY: &str = "PASSWORD=";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.to_ascii_uppercase().find(KEY) {
        let (head, tail) = rest.split_at(at + KEY.len());
        out.push_str(head);
        let (quote, body) = match tail.chars().next() {
            Some(q @ ('"' | '\'')) => (Some(q), &tail[1..]),
            _ => (None, tail),
        };
        let end = match quote {
            Some(q) => body.find(q).map_or(body.len(), |i| i + 1),
            None => body
                .find(|c: char| c.is_whitespace() || c == ',' || c == '}')
                .unwrap_or(body.len()),
        };
        out.push_str(SCRUBBED);
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

/// Cuts the password of `scheme://user:password@host` URLs.
fn scrub_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..=colon]);
                out.push_str(SCRUBBED);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_secrets_and_password_shapes_are_removed() {
        let text = r#"pg_dump failed: "pg_dump" PGPASSWORD="s3cr3t-pw" -h x; url postgres://kanmon:pw2@127.0.0.1:5432/postgres; key abcd1234; DB_PASSWORD=plain next"#;
        let out = scrub(text, ["abcd1234"]);
        for secret in ["s3cr3t-pw", "pw2", "abcd1234", "plain"] {
            assert!(!out.contains(secret), "{secret} left in {out}");
        }
        assert!(out.contains("postgres://kanmon:<redacted>@127.0.0.1:5432/postgres"));
        assert!(out.contains("next") && out.contains("pg_dump failed"));
        assert_eq!(scrub("nothing here", ["zzz"]), "nothing here");
    }
}
