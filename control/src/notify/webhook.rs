//! Webhook delivery: one signed JSON POST to a tenant's URL. The host is resolved here and
//! every address checked against [`Reach`] before the connection is made to exactly that
//! address (so a name cannot be re-resolved to an internal address between check and use),
//! and redirects are not followed (a redirect could point anywhere).

use std::{net::SocketAddr, time::Duration};

use crate::{
    domain::notify::{check_url, signature, Reach, TargetRefused},
    store::Delivery,
};

use super::Sent;

/// Longest a receiver may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The address to connect to for `url`: the literal one, or the first resolved address that
/// `reach` allows.
async fn target(url: &url::Url, reach: &Reach) -> Result<SocketAddr, String> {
    let port = url.port_or_known_default().ok_or("no port")?;
    match url.host() {
        Some(url::Host::Ipv4(ip)) => Ok(SocketAddr::new(ip.into(), port)),
        Some(url::Host::Ipv6(ip)) => Ok(SocketAddr::new(ip.into(), port)),
        Some(url::Host::Domain(name)) => {
            let addrs = tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| format!("resolving {name}: {e}"))?;
            let mut refused = None;
            for addr in addrs {
                match reach.check(addr) {
                    Ok(()) => return Ok(addr),
                    Err(e) => refused = Some(e),
                }
            }
            Err(refused.map_or_else(|| format!("{name} has no address"), |e| e.to_string()))
        }
        None => Err("no host".into()),
    }
}

/// POSTs `d`'s payload to `url`, signed with `secret` at `unix` seconds.
pub(super) async fn send(
    url: &str,
    reach: &Reach,
    tls: &rustls::ClientConfig,
    secret: &str,
    d: &Delivery,
    unix: u64,
) -> Sent {
    let url = match check_url(url, reach) {
        Ok(u) => u,
        Err(TargetRefused::Url(e)) => return Sent::failed(None, format!("webhook url: {e}")),
        Err(e) => return Sent::failed(None, e.to_string()),
    };
    let addr = match target(&url, reach).await {
        Ok(a) => a,
        Err(e) => return Sent::failed(None, e),
    };
    let mut client = reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT);
    if let Some(url::Host::Domain(name)) = url.host() {
        client = client.resolve(name, addr);
    }
    let client = match client.build() {
        Ok(c) => c,
        Err(e) => return Sent::failed(None, format!("HTTP client: {e}")),
    };
    let body = d.payload.clone().into_bytes();
    let sig = signature(secret, unix, &body);
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            reqwest::header::USER_AGENT,
            concat!("kanmon/", env!("CARGO_PKG_VERSION")),
        )
        .header("Kanmon-Signature", sig)
        .header("Kanmon-Event", d.event.as_str())
        .header("Kanmon-Delivery", d.id.to_string())
        .body(body)
        .send()
        .await;
    match sent {
        Ok(resp) if resp.status().is_success() => Sent::ok(Some(resp.status().as_u16())),
        Ok(resp) => {
            let code = resp.status().as_u16();
            Sent::failed(Some(code), format!("receiver answered HTTP {code}"))
        }
        // Without the URL: it may carry a token in its path or query.
        Err(e) => Sent::failed(None, format!("{}", e.without_url())),
    }
}
