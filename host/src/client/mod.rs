//! The client commands of `ringshare` (`put`, `get`, `ls`, ...): one node's
//! REST API, in words or in JSON. Every failure is a [`ClientError`] whose
//! message is meant for people and whose exit code for scripts.
//!
//! - `transfer`: `put` and `get` with progress bars, resumable downloads
//!   verified against their hash;
//! - `show`: listings and the ring, as text tables;
//! - `menu`: the interactive menu.

mod menu;
mod show;
mod transfer;

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::store::url_segment as encode;

pub use menu::run as menu;
pub use transfer::{GetOptions, PutOptions};

/// The node the client commands talk to unless told otherwise.
pub const DEFAULT_NODE: &str = "http://127.0.0.1:8080";

/// Why a client command failed, and the exit code that says so.
#[derive(Debug)]
pub enum ClientError {
    /// The node did not answer (exit 3).
    Unreachable(String),
    /// No such file (exit 4).
    NotFound(String),
    /// The file exists (exit 5).
    Conflict(String),
    /// The request was refused as bad: a bad name, an argument (exit 6).
    Invalid(String),
    /// What was received does not match its hash (exit 7).
    Corrupt(String),
    /// The node failed (exit 8).
    Node(String),
    /// A local file could not be read or written (exit 9).
    Local(String),
    /// The command was given wrong: arguments, configuration (exit 2).
    Usage(String),
    /// The node refused: a token is needed or was wrong (401), or it takes
    /// writes only from its own machine (403) (exit 10).
    Denied(String),
}

impl ClientError {
    /// The process exit code (documented in the README).
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Unreachable(_) => 3,
            ClientError::NotFound(_) => 4,
            ClientError::Conflict(_) => 5,
            ClientError::Invalid(_) => 6,
            ClientError::Corrupt(_) => 7,
            ClientError::Node(_) => 8,
            ClientError::Local(_) => 9,
            ClientError::Usage(_) => 2,
            ClientError::Denied(_) => 10,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable(m)
            | ClientError::NotFound(m)
            | ClientError::Conflict(m)
            | ClientError::Invalid(m)
            | ClientError::Corrupt(m)
            | ClientError::Node(m)
            | ClientError::Local(m)
            | ClientError::Usage(m)
            | ClientError::Denied(m) => f.write_str(m),
        }
    }
}

/// A node's REST API.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// Listings in JSON instead of tables.
    pub json: bool,
    /// The token presented on every request, if any.
    token: Option<String>,
    /// The CA trusted for `https://` nodes, if any.
    ca: Option<reqwest::Certificate>,
}

/// An HTTP client presenting `token`, trusting only `ca` for HTTPS.
fn http(token: Option<&str>, ca: Option<&reqwest::Certificate>) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder().no_proxy().connect_timeout(Duration::from_secs(5));
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ClientError::Usage("the token holds characters a header cannot carry".into()))?;
        value.set_sensitive(true);
        builder =
            builder.default_headers(reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, value)]));
    }
    if let Some(ca) = ca {
        builder = builder.add_root_certificate(ca.clone());
    }
    builder.build().map_err(|e| ClientError::Local(e.to_string()))
}

impl Client {
    /// A client of the node at `node` (`http://host:port`, `https://...`,
    /// or `host:port`).
    pub fn new(node: &str, json: bool) -> Result<Self, ClientError> {
        let base = if node.contains("://") { node.to_owned() } else { format!("http://{node}") };
        let base = base.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base)
            .map_err(|e| ClientError::Usage(format!("{node:?} is not a node's address: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ClientError::Usage(format!("{node:?}: a node is reached over http:// or https://")));
        }
        Ok(Self { base, http: http(None, None)?, json, token: None, ca: None })
    }

    /// The token this client presents, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The same client, presenting `token` (`Authorization: Bearer`) on
    /// every request: a node with write tokens needs one for `put` and `rm`.
    pub fn with_token(self, token: Option<&str>) -> Result<Self, ClientError> {
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(self) };
        let http = http(Some(token), self.ca.as_ref())?;
        Ok(Self { http, token: Some(token.to_owned()), ..self })
    }

    /// The same client, trusting the CA certificate in `ca` (PEM) for an
    /// `https://` node: a devnet's is `data/certs/ca/ca.crt`. An `https://`
    /// node without one is refused here, before anything is sent.
    pub fn with_ca(self, ca: Option<&std::path::Path>) -> Result<Self, ClientError> {
        let Some(path) = ca else {
            if self.base.starts_with("https://") {
                return Err(ClientError::Usage(format!(
                    "{} is HTTPS: give the CA that signed its certificate (--ca, RINGSHARE_CA; a devnet's is data/certs/ca/ca.crt)",
                    self.base
                )));
            }
            return Ok(self);
        };
        let pem = std::fs::read(path)
            .map_err(|e| ClientError::Usage(format!("cannot read the CA {}: {e}", path.display())))?;
        let ca = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| ClientError::Usage(format!("{} is not a PEM certificate: {e}", path.display())))?;
        let http = http(self.token.as_deref(), Some(&ca))?;
        Ok(Self { http, ca: Some(ca), ..self })
    }

    /// The node's address as people write it (`127.0.0.1:8080`).
    pub fn node(&self) -> &str {
        self.base.split("://").nth(1).unwrap_or(&self.base)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request failed before an answer: the node is not reachable.
    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        let why = if self.base.starts_with("https://") && e.is_connect() {
            // A handshake that failed says why (a certificate of another CA, say).
            root_cause(e)
        } else if e.is_connect() {
            "connection refused or no route".to_owned()
        } else if e.is_timeout() {
            "it did not answer in time".to_owned()
        } else {
            root_cause(e)
        };
        ClientError::Unreachable(format!("node {} is not reachable ({why})", self.node()))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.refusal(response).await)
    }

    /// An error answer of the node, in words.
    async fn refusal(&self, response: reqwest::Response) -> ClientError {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let message = body["error"].as_str().map_or_else(|| status.to_string(), str::to_owned);
        let code = body["code"].as_str().unwrap_or_default();
        match status {
            StatusCode::NOT_FOUND => ClientError::NotFound(message),
            StatusCode::CONFLICT => ClientError::Conflict(message),
            StatusCode::UNAUTHORIZED => {
                ClientError::Denied(format!("{message} (set RINGSHARE_TOKEN or [client] token)"))
            }
            StatusCode::FORBIDDEN => ClientError::Denied(message),
            s if s.is_client_error() => ClientError::Invalid(message),
            _ => ClientError::Node(format!("node {} failed: {message} ({status}{})", self.node(), opt_code(code))),
        }
    }

    async fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        let response = self.send(self.http.get(self.url(path))).await?;
        response.json().await.map_err(|e| ClientError::Node(format!("node {} sent a bad answer: {e}", self.node())))
    }

    /// `ls`: this node's files, or with `network` every node's.
    pub async fn ls(&self, network: bool) -> Result<String, ClientError> {
        let response =
            self.send(self.http.get(self.url(if network { "/files?scope=network" } else { "/files" }))).await?;
        // A listing that left nodes out says so (on stderr: stdout stays the listing).
        if let Some(missing) = response.headers().get(crate::rest::MISSING_NODES).and_then(|v| v.to_str().ok()) {
            eprintln!("warning: these nodes did not answer, and their files may be missing: {missing}");
        }
        let files: Value = response
            .json()
            .await
            .map_err(|e| ClientError::Node(format!("node {} sent a bad answer: {e}", self.node())))?;
        Ok(if self.json { pretty(&files) } else { show::files(&files, network) })
    }

    /// `search PREFIX`: files anywhere whose name starts with it.
    pub async fn search(&self, prefix: &str) -> Result<String, ClientError> {
        let found = self.get_json(&format!("/search?q={}", encode(prefix))).await?;
        Ok(if self.json { pretty(&found) } else { show::files(&found, true) })
    }

    /// `lookup NAME`: the node responsible for a name, and its holders.
    pub async fn lookup(&self, name: &str) -> Result<String, ClientError> {
        let found = self.get_json(&format!("/lookup/{}", encode(checked(name)?))).await?;
        Ok(if self.json { pretty(&found) } else { show::lookup(name, &found) })
    }

    /// `nodes`: every node of the ring.
    pub async fn nodes(&self) -> Result<String, ClientError> {
        let nodes = self.get_json("/nodes").await?;
        Ok(if self.json { pretty(&nodes) } else { show::nodes(&nodes) })
    }

    /// `ring`: this node's place in the ring.
    pub async fn ring(&self) -> Result<String, ClientError> {
        let ring = self.get_json("/ring").await?;
        Ok(if self.json { pretty(&ring) } else { show::ring(&ring) })
    }

    /// `plugins`: what the node loaded.
    pub async fn plugins(&self) -> Result<String, ClientError> {
        let plugins = self.get_json("/plugins").await?;
        Ok(if self.json { pretty(&plugins) } else { show::plugins(&plugins) })
    }

    /// `rm NAME`: deletes a file everywhere.
    pub async fn rm(&self, name: &str) -> Result<String, ClientError> {
        let url = self.url(&format!("/files/{}", encode(checked(name)?)));
        let response = self.send(self.http.delete(url)).await.map_err(|e| match e {
            ClientError::NotFound(_) => ClientError::NotFound(format!("no such file: {name}")),
            other => other,
        })?;
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        Ok(if self.json {
            pretty(&answer)
        } else {
            let holders = answer["holders"].as_array().map_or(0, Vec::len);
            format!("deleted {name} ({holders} holders recorded it)")
        })
    }

    /// `events`: hands each event the node hears to `out`, one line each,
    /// until the stream ends; answers why it ended (the node stopped, or
    /// never answered).
    pub async fn events(&self, mut out: impl FnMut(String)) -> ClientError {
        use futures_util::StreamExt;
        let response = match self.send(self.http.get(self.url("/events"))).await {
            Ok(response) => response,
            Err(e) => return e,
        };
        let mut body = response.bytes_stream();
        let (mut pending, mut kind) = (Vec::<u8>::new(), String::new());
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => return self.unreachable(&e),
            };
            pending.extend_from_slice(&chunk);
            // Lines are decoded whole: a character split across chunks stays one.
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end();
                if let Some(k) = line.strip_prefix("event:") {
                    kind = k.trim().to_owned();
                } else if let Some(data) = line.strip_prefix("data:") {
                    let data = data.trim();
                    out(if self.json { data.to_owned() } else { show::event(&kind, data) });
                }
            }
        }
        ClientError::Unreachable(format!("node {} stopped sending events", self.node()))
    }
}

fn opt_code(code: &str) -> String {
    if code.is_empty() { String::new() } else { format!(", {code}") }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A file name the network accepts, checked here as every node would.
fn checked(name: &str) -> Result<&str, ClientError> {
    crate::store::FileName::parse(name)
        .map_err(|e| ClientError::Invalid(format!("{name:?} is not a file name: {e}")))?;
    Ok(name)
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_segment_of_a_url() {
        assert_eq!(encode("report 2026.pdf"), "report%202026.pdf");
        assert_eq!(encode("a/b?c#d"), "a%2Fb%3Fc%23d");
        assert_eq!(encode("été"), "%C3%A9t%C3%A9");
    }

    #[test]
    fn a_node_is_given_with_or_without_its_scheme() {
        assert_eq!(Client::new("127.0.0.1:7002", false).unwrap().url("/files"), "http://127.0.0.1:7002/files");
        assert_eq!(Client::new("http://127.0.0.1:7002/", false).unwrap().node(), "127.0.0.1:7002");
        assert!(matches!(Client::new("http://[bad", false), Err(ClientError::Usage(_))));
    }
}
