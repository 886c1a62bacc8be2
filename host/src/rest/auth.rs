//! Who may write and read through the REST API.
//!
//! - **Write tokens** (`--write-token FILE`, one token a line): `PUT`,
//!   `DELETE`, `POST` (the original system's `/upload/`) and any write to an
//!   HTTP plugin need `Authorization: Bearer TOKEN` naming one of them, or
//!   get `401`. Tokens are compared as BLAKE3 digests in constant time.
//! - **Protected mode**, a node without write tokens (as Redis does until a
//!   password is set): writes only from loopback clients; any other gets
//!   `403 protected-mode` saying how to open it.
//! - **Read tokens** (`--read-token FILE`), optional: every other request
//!   then needs a read or a write token, or gets `401`. For reads the token
//!   may also come in the `ringshare_token` cookie, which the ring page sets
//!   for its live events and download links; writes never take the cookie.
//! - **Write rate**, per client address (`--write-rate`, writes a second,
//!   bursts of twice that; GCRA through `governor`): a client past it gets
//!   `429 too-many-writes` with `retry-after`. Loopback clients are not
//!   limited unless `--rate-limit-loopback`.
//!
//! The ring's and files' gRPC calls are not REST: members only decide those
//! (see `tls::gate`).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::tls::Peer;

/// Tokens longer than this are not tokens.
const MAX_TOKEN_BYTES: usize = 4096;

/// Rate checks between two sweeps of the limiter's forgotten clients.
const SWEEP_EVERY: u64 = 4096;

/// The node's REST credentials and write limits.
#[derive(Default)]
pub struct Access {
    /// Digests of the write tokens; none: protected mode.
    write: Option<Vec<[u8; 32]>>,
    /// Digests of the read tokens; none: reads are open.
    read: Option<Vec<[u8; 32]>>,
    /// Writes a client address may make; none: no limit.
    rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Whether loopback clients are limited too.
    limit_loopback: bool,
    checks: AtomicU64,
}

/// How fast one client may write.
#[derive(Debug, Clone, Copy)]
pub struct WriteRate {
    /// Writes a second per client address; 0: no limit.
    pub per_second: u32,
    /// Whether loopback clients are limited too.
    pub loopback: bool,
}

impl Access {
    /// Access with the tokens of `write` and `read` (files), if given, and
    /// the write `rate`.
    pub fn load(write: Option<&Path>, read: Option<&Path>, rate: WriteRate) -> Result<Self, String> {
        let limiter = NonZeroU32::new(rate.per_second).map(|per_second| {
            let burst = per_second.saturating_mul(NonZeroU32::new(2).expect("2 is not 0"));
            DefaultKeyedRateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
        });
        Ok(Self {
            write: write.map(tokens).transpose()?,
            read: read.map(tokens).transpose()?,
            rate: limiter,
            limit_loopback: rate.loopback,
            checks: AtomicU64::new(0),
        })
    }

    /// Whether `ip` may write now; if not, how long until it may.
    fn write_allowed(&self, ip: IpAddr) -> Result<(), std::time::Duration> {
        let Some(limiter) = &self.rate else { return Ok(()) };
        if ip.is_loopback() && !self.limit_loopback {
            return Ok(());
        }
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter.check_key(&ip).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Whether writes need a token (else: loopback clients only).
    pub fn has_write_tokens(&self) -> bool {
        self.write.is_some()
    }
}

/// The digests of the tokens in `path`: one a line, blank lines ignored.
/// Refuses a file that is missing, empty, readable by others than its owner
/// and group, or holds a token with spaces or control characters.
pub fn tokens(path: &Path) -> Result<Vec<[u8; 32]>, String> {
    use std::os::unix::fs::PermissionsExt;
    let name = path.display();
    let metadata = std::fs::metadata(path).map_err(|e| format!("{name}: {e}"))?;
    if metadata.permissions().mode() & 0o004 != 0 {
        return Err(format!("{name}: readable by every user of this machine; chmod o-r it first"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    let mut digests = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let token = line.trim();
        if token.len() > MAX_TOKEN_BYTES || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{name}: line {} is not a token (no spaces, at most {MAX_TOKEN_BYTES} bytes)", i + 1));
        }
        digests.push(*blake3::hash(token.as_bytes()).as_bytes());
    }
    if digests.is_empty() {
        return Err(format!("{name}: holds no token"));
    }
    Ok(digests)
}

/// Whether `method` changes something.
fn writes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The request's bearer token, if any.
fn bearer(request: &Request) -> Option<String> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    Some(value.strip_prefix("Bearer ")?.trim().to_owned())
}

/// The token in the request's `ringshare_token` cookie, if any: what the
/// ring page sets so that its live events and download links, which cannot
/// carry a header, can read. Taken for reads only: a browser sends cookies
/// along with any site's request, so a write needs the header.
fn cookie(request: &Request) -> Option<String> {
    let cookies = request.headers().get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok());
    let value = cookies.flat_map(|c| c.split(';')).find_map(|c| c.trim().strip_prefix("ringshare_token="))?;
    let value = percent_encoding::percent_decode_str(value).decode_utf8().ok()?;
    Some(value.trim().to_owned()).filter(|t| !t.is_empty())
}

/// Whether `token` is one of `allowed`.
fn one_of(token: Option<String>, allowed: &[&[[u8; 32]]]) -> bool {
    let Some(token) = token.filter(|t| t.len() <= MAX_TOKEN_BYTES) else { return false };
    let presented = blake3::hash(token.as_bytes());
    // blake3::Hash compares in constant time; every digest is compared.
    allowed.iter().flat_map(|set| set.iter()).fold(false, |found, d| found | (presented == blake3::Hash::from(*d)))
}

/// Whether the request's bearer token is one of `allowed`.
fn presents(request: &Request, allowed: &[&[[u8; 32]]]) -> bool {
    one_of(bearer(request), allowed)
}

/// Middleware: refuses what the node's access rules refuse.
pub async fn authorize(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    let refusal = if writes(request.method()) {
        match &access.write {
            Some(write) if presents(&request, &[write]) => None,
            Some(_) => Some(unauthorized("a write needs Authorization: Bearer with one of the node's write tokens")),
            None => match request.extensions().get::<Peer>() {
                Some(peer) if !peer.remote.ip().is_loopback() => Some(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "protected-mode",
                    "this node takes writes only from its own machine until it is given write tokens (--write-token)",
                )),
                // From loopback, or in-process.
                _ => None,
            },
        }
    } else {
        match (&access.read, &access.write) {
            (Some(read), write)
                if !presents(&request, &[read, write.as_deref().unwrap_or(&[])])
                    && !one_of(cookie(&request), &[read, write.as_deref().unwrap_or(&[])]) =>
            {
                Some(unauthorized("a read needs Authorization: Bearer with one of the node's read or write tokens"))
            }
            _ => None,
        }
    };
    if let Some(error) = refusal {
        return error.into_response();
    }
    if writes(request.method())
        && let Some(peer) = request.extensions().get::<Peer>()
        && let Err(wait) = access.write_allowed(peer.remote.ip())
    {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut answer = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-writes",
            format!("this client writes faster than the node allows (--write-rate); try again in {seconds} s"),
        )
        .into_response();
        answer.headers_mut().insert(header::RETRY_AFTER, seconds.max(1).into());
        return answer;
    }
    next.run(request).await
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn token_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(tokens(&file(dir.path(), "two", "alpha\n\n beta \n", 0o600)).unwrap().len(), 2);
        let empty = tokens(&file(dir.path(), "empty", "\n  \n", 0o600)).unwrap_err();
        assert!(empty.contains("holds no token"), "{empty}");
        let open = tokens(&file(dir.path(), "open", "alpha\n", 0o644)).unwrap_err();
        assert!(open.contains("readable by every user"), "{open}");
        let spaced = tokens(&file(dir.path(), "spaced", "two words\n", 0o600)).unwrap_err();
        assert!(spaced.contains("line 1"), "{spaced}");
        assert!(tokens(&dir.path().join("missing")).unwrap_err().contains("missing"));
    }

    #[test]
    fn a_bearer_token_is_found_among_the_allowed() {
        let allowed = [*blake3::hash(b"alpha").as_bytes(), *blake3::hash(b"beta").as_bytes()];
        let with = |value: &str| {
            Request::builder().header(header::AUTHORIZATION, value).body(axum::body::Body::empty()).unwrap()
        };
        assert!(presents(&with("Bearer beta"), &[&allowed]));
        assert!(!presents(&with("Bearer gamma"), &[&allowed]));
        assert!(!presents(&with("Basic beta"), &[&allowed]));
        assert!(!presents(&Request::new(axum::body::Body::empty()), &[&allowed]));
        assert!(!presents(&with("Bearer beta"), &[]));
    }
}
