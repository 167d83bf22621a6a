//! A small HTTP client for the API.

use reqwest::Method;
use serde_json::Value;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{status}: {message}{}", missing.as_deref().map(|m| format!(" (missing permission: {m})")).unwrap_or_default())]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
        /// The permission the server said is missing.
        missing: Option<String>,
    },
    /// The request did not get an answer.
    #[error("cannot reach the control plane: {0}")]
    Transport(#[from] reqwest::Error),
    /// No token given.
    #[error("no token: pass --token, set KANMON_TOKEN, or --token-file")]
    NoToken,
    /// Bad command-line input.
    #[error("{0}")]
    Usage(String),
    /// The operation the command waited for failed.
    #[error("operation {0} failed: {1}")]
    OperationFailed(u64, String),
    /// The wait for an operation ran out.
    #[error("operation {0} still not finished after the wait limit")]
    WaitTimeout(u64),
}

/// API client with a base URL and bearer token.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:7070`) that verifies an `https` server
    /// against the system's roots.
    pub fn new(base: &str, token: String) -> Self {
        match Self::with_ca(base, token.clone(), None) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "TLS client setup failed; using the HTTP client's defaults");
                Self {
                    base: base.trim_end_matches('/').to_string(),
                    token,
                    http: reqwest::Client::new(),
                }
            }
        }
    }

    /// A client for `base` that verifies an `https` server against the CA certificates in
    /// `ca` (a PEM file, e.g. the local CA of `kanmon up`), or the system's roots.
    pub fn with_ca(
        base: &str,
        token: String,
        ca: Option<&std::path::Path>,
    ) -> Result<Self, ClientError> {
        let tls = crate::api::tls::client_config(ca)
            .map_err(|e| ClientError::Usage(format!("TLS: {e}")))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    /// Sends a request and decodes the JSON answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        Err(ClientError::Api {
            status: status.as_u16(),
            message: value["error"]
                .as_str()
                .unwrap_or("request failed")
                .to_string(),
            missing: value["missing_permission"].as_str().map(str::to_string),
        })
    }

    /// Streams the body of `GET path` into a new file `out` (mode 0600: a database dump holds
    /// the tenant's data). Returns the bytes written.
    pub async fn download(&self, path: &str, out: &std::path::Path) -> Result<u64, ClientError> {
        use std::io::Write;
        let mut resp = self
            .http
            .get(format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .send()
            .await?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let value: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(ClientError::Api {
                status,
                message: value["error"].as_str().unwrap_or("download failed").into(),
                missing: value["missing_permission"].as_str().map(str::to_string),
            });
        }
        let usage = |e: std::io::Error| ClientError::Usage(format!("{}: {e}", out.display()));
        let mut file = crate::private::create_file(out).map_err(usage)?;
        let mut written = 0u64;
        while let Some(chunk) = resp.chunk().await? {
            file.write_all(&chunk).map_err(usage)?;
            written += chunk.len() as u64;
        }
        file.sync_all().map_err(usage)?;
        Ok(written)
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// PUT with a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }
}
