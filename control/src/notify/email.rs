//! E-mail delivery through the configured SMTP server (lettre, rustls on ring).

use std::time::Duration;

use lettre::{
    message::{header::ContentType, Mailbox},
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use serde_json::Value;

use crate::{
    runtime::{Smtp, SmtpSecurity},
    store::Delivery,
};

use super::Sent;

/// Longest one SMTP exchange may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The subject and text of the message for `payload`.
pub(super) fn compose(payload: &Value) -> (String, String) {
    let op = &payload["operation"];
    let dep = &payload["deployment"];
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let subject = format!(
        "[kanmon] {}: operation {} ({}) {}",
        s(&dep["instance"]),
        op["id"],
        s(&op["kind"]),
        s(&op["status"])
    );
    let mut text = format!(
        "Event:        {}\nDeployment:   {} (org {}, title {}, zone {})\nOperation:    {} ({})\n\
         Status:       {}\nRequested by: {}\n",
        s(&payload["event"]),
        s(&dep["instance"]),
        s(&dep["org"]),
        s(&dep["title"]),
        s(&dep["zone"]),
        op["id"],
        s(&op["kind"]),
        s(&op["status"]),
        s(&op["requested_by"]),
    );
    if let Some(e) = op["error"].as_str() {
        text.push_str(&format!("Error:        {e}\n"));
    }
    (subject, text)
}

/// TLS that trusts the configured CA besides the system's roots.
fn with_ca(host: &str, pem: &[u8]) -> Result<TlsParameters, lettre::transport::smtp::Error> {
    TlsParameters::builder(host.to_string())
        .add_root_certificate(Certificate::from_pem(pem)?)
        .build_rustls()
}

fn transport(smtp: &Smtp) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    type T = AsyncSmtpTransport<Tokio1Executor>;
    let host = smtp.host.as_str();
    let builder = match (smtp.security, &smtp.ca) {
        (SmtpSecurity::Tls, None) => T::relay(host),
        (SmtpSecurity::Starttls, None) => T::starttls_relay(host),
        (SmtpSecurity::Tls, Some(ca)) => {
            with_ca(host, ca).map(|p| T::builder_dangerous(host).tls(Tls::Wrapper(p)))
        }
        (SmtpSecurity::Starttls, Some(ca)) => {
            with_ca(host, ca).map(|p| T::builder_dangerous(host).tls(Tls::Required(p)))
        }
        (SmtpSecurity::None, _) => Ok(T::builder_dangerous(host)),
    }
    .map_err(|e| format!("SMTP setup: {e}"))?;
    let mut builder = builder.port(smtp.port).timeout(Some(TIMEOUT));
    if let Some((user, password)) = &smtp.credentials {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Ok(builder.build())
}

/// Mails `d` to `to`.
pub(super) async fn send(smtp: Option<&Smtp>, to: &str, d: &Delivery) -> Sent {
    let Some(smtp) = smtp else {
        return Sent::failed(
            None,
            "no SMTP server is configured ([smtp] in --config)".into(),
        );
    };
    let payload: Value = serde_json::from_str(&d.payload).unwrap_or(Value::Null);
    let (subject, text) = compose(&payload);
    let (from, to) = match (smtp.from.parse::<Mailbox>(), to.parse::<Mailbox>()) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => return Sent::failed(None, format!("address: {e}")),
    };
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(text);
    let message = match message {
        Ok(m) => m,
        Err(e) => return Sent::failed(None, format!("message: {e}")),
    };
    let transport = match transport(smtp) {
        Ok(t) => t,
        Err(e) => return Sent::failed(None, e),
    };
    match transport.send(message).await {
        Ok(resp) => Sent::ok(resp.code().to_string().parse().ok()),
        Err(e) => {
            let mut why = format!("SMTP: {e}");
            if let Some((_, pw)) = &smtp.credentials {
                if !pw.is_empty() {
                    why = why.replace(pw.as_str(), "<redacted>");
                }
            }
            Sent::failed(e.status().and_then(|c| c.to_string().parse().ok()), why)
        }
    }
}
