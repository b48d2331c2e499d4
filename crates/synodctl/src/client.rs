//! The HTTP side of synodctl: builds requests for Synod's HTTP/JSON API, sends them to one
//! endpoint after another until one gives a definite answer, and turns error bodies into
//! [`CtlError`]s that carry the server's code and message.
//!
//! Failover rule: a connection error, a timeout or a 503 (`unavailable` / `busy`) moves on to
//! the next endpoint; any other answer — success or a definite error such as 404, 409, 400 — is
//! final. The endpoint that last answered is tried first next time (the REPL keeps one client),
//! so a dead first endpoint costs one connect attempt per session, not per command.
//!
//! Streams (`GET /v1/watch`) open with the same failover, on a second HTTP client whose read
//! timeout is [`STREAM_SILENCE_MAX`] rather than `--timeout`: a watch is quiet for as long as
//! nothing changes, so it asks the server for progress lines and only a longer silence counts
//! as a dead endpoint.
//!
//! Retrying after 503 `unavailable` or a timeout is what the API contract asks of clients,
//! but it is not exactly-once: the first node may still apply the write. A retried `put`
//! converges to the same value; a retried `del` or `cas` may then report `key_not_found` or
//! `cas_conflict` for a write that did happen. docs/synodctl.md says so.

use reqwest::blocking::{Client as HttpClient, Response};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use std::io::{BufReader, Read};
use std::time::Duration;

/// Largest response body synodctl reads; a guard against a misbehaving endpoint, far above any
/// real answer (a full listing of the store is bounded by the server's own limits).
pub const RESPONSE_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// How much of a non-JSON error body is quoted in the error message.
const ERROR_BODY_QUOTE_BYTES_MAX: usize = 200;

/// How often a stream asks the server for a progress line when nothing else is sent (the
/// API's `progress_notify_ms`): its heartbeat.
pub const STREAM_PROGRESS_MS: u64 = 2_000;
/// Longest a stream may stay silent before its endpoint counts as dead: several missed
/// heartbeats, so a busy server is not mistaken for a dead one.
pub const STREAM_SILENCE_MAX: Duration = Duration::from_millis(3 * STREAM_PROGRESS_MS);

/// Why a command failed; each maps to one exit code.
#[derive(Debug, Clone, PartialEq)]
pub enum CtlError {
    /// Bad command line or REPL input; nothing was sent. Exit 2.
    Usage(String),
    /// The server answered with an error. Exit 1. `body` is the whole JSON answer (a
    /// `cas_conflict` carries the current kv there).
    Server {
        endpoint: String,
        status: u16,
        code: String,
        message: String,
        body: Value,
    },
    /// An endpoint answered something that is not the API's JSON. Exit 1.
    BadAnswer { endpoint: String, reason: String },
    /// No endpoint gave an answer; one `endpoint: reason` per attempt. Exit 3.
    Unreachable(Vec<String>),
}

impl CtlError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Server { .. } | CtlError::BadAnswer { .. } => 1,
            CtlError::Usage(_) => 2,
            CtlError::Unreachable(_) => 3,
        }
    }
}

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtlError::Usage(m) => write!(f, "{m}"),
            CtlError::Server {
                endpoint,
                status,
                code,
                message,
                ..
            } => write!(f, "{code}: {message} (HTTP {status} from {endpoint})"),
            CtlError::BadAnswer { endpoint, reason } => {
                write!(f, "bad answer from {endpoint}: {reason}")
            }
            CtlError::Unreachable(attempts) => {
                write!(f, "no endpoint reachable: {}", attempts.join("; "))
            }
        }
    }
}

impl std::error::Error for CtlError {}

/// A successful (2xx) answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// host:port of the endpoint that answered.
    pub endpoint: String,
    pub body: Value,
}

/// One API request, independent of the endpoint it is sent to.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: Method,
    /// Already percent-encoded path, starting with `/`.
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

impl Request {
    pub fn new(method: Method, path: String) -> Self {
        Request {
            method,
            path,
            query: Vec::new(),
            body: None,
        }
    }

    pub fn query(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

/// `/v1/kv/{key}` with the key percent-encoded as one path segment. Refuses the keys a URL
/// cannot carry in a segment: the empty key, and `.`/`..` (every URL parser, server and
/// client, removes those as dot-segments — even when written `%2E`).
pub fn kv_path(key: &str, suffix: &str) -> Result<String, CtlError> {
    match key {
        "" => Err(CtlError::Usage("the key must not be empty".into())),
        "." | ".." => Err(CtlError::Usage(format!(
            "the key {key:?} cannot be sent in a URL path (it is a dot-segment)"
        ))),
        _ => Ok(format!("/v1/kv/{}{suffix}", encode_segment(key))),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so `/`, `?`, `#`, `%` and
/// spaces in keys stay inside one path segment.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Turns `host:port` or `http://host:port[/]` into a base URL without a trailing slash.
#[cfg(test)]
pub fn normalize_endpoint(raw: &str) -> Result<(String, String), CtlError> {
    normalize_endpoint_with(raw, "http")
}

/// [`normalize_endpoint`], with the scheme of an endpoint that names none (`https` when TLS
/// flags were given).
pub fn normalize_endpoint_with(raw: &str, scheme: &str) -> Result<(String, String), CtlError> {
    let raw = raw.trim().trim_end_matches('/');
    if raw.is_empty() {
        return Err(CtlError::Usage("empty endpoint in --endpoints".into()));
    }
    let base = if raw.starts_with("http://") || raw.starts_with("https://") {
        raw.to_string()
    } else if raw.contains("://") {
        return Err(CtlError::Usage(format!(
            "{raw}: only http:// and https:// endpoints"
        )));
    } else {
        format!("{scheme}://{raw}")
    };
    let url = Url::parse(&base).map_err(|e| CtlError::Usage(format!("{raw}: {e}")))?;
    let host = url
        .host_str()
        .ok_or_else(|| CtlError::Usage(format!("{raw}: no host")))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| CtlError::Usage(format!("{raw}: no port")))?;
    if url.path() != "/" || url.query().is_some() {
        return Err(CtlError::Usage(format!(
            "{raw}: an endpoint is host:port, without a path"
        )));
    }
    let display = format!("{host}:{port}");
    Ok((display, base))
}

#[derive(Debug, Clone)]
struct Endpoint {
    /// host:port, for prompts and messages.
    display: String,
    /// http://host:port or https://host:port
    base: String,
}

/// A PEM certificate and its PEM key, as read.
type PemPair = (Vec<u8>, Vec<u8>);

/// TLS files, etcdctl's `--cacert`, `--cert`, `--key`.
#[derive(Clone, Debug, Default)]
pub struct Tls {
    pub cacert: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl Tls {
    /// Whether any TLS flag was given.
    pub fn any(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some() || self.key.is_some()
    }

    fn read(path: &std::path::Path) -> Result<Vec<u8>, CtlError> {
        std::fs::read(path).map_err(|e| CtlError::Usage(format!("{}: {e}", path.display())))
    }

    /// The client certificate and key, when both were given (one without the other is a
    /// usage error).
    fn identity_pem(&self) -> Result<Option<PemPair>, CtlError> {
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Ok(Some((Self::read(c)?, Self::read(k)?))),
            (None, None) => Ok(None),
            _ => Err(CtlError::Usage("--cert and --key go together".into())),
        }
    }

    fn apply(
        &self,
        mut b: reqwest::blocking::ClientBuilder,
    ) -> Result<reqwest::blocking::ClientBuilder, CtlError> {
        let bad = |e: reqwest::Error| CtlError::Usage(format!("TLS files: {e}"));
        if let Some(ca) = &self.cacert {
            let ca = reqwest::Certificate::from_pem(&Self::read(ca)?).map_err(bad)?;
            b = b.add_root_certificate(ca);
        }
        if let Some((mut cert, key)) = self.identity_pem()? {
            // rustls wants the certificate and its key in one PEM document.
            cert.push(b'\n');
            cert.extend_from_slice(&key);
            b = b.identity(reqwest::Identity::from_pem(&cert).map_err(bad)?);
        }
        Ok(b)
    }

    /// The same files for tonic (lock, elect).
    pub fn grpc(&self) -> Result<Option<tonic::transport::ClientTlsConfig>, CtlError> {
        if !self.any() {
            return Ok(None);
        }
        let mut c = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &self.cacert {
            c = c.ca_certificate(tonic::transport::Certificate::from_pem(Self::read(ca)?));
        }
        if let Some((cert, key)) = self.identity_pem()? {
            c = c.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        Ok(Some(c))
    }
}

/// An open response stream (NDJSON), with the endpoint it comes from.
pub struct Stream {
    pub endpoint: String,
    pub reader: BufReader<Response>,
}

/// A failover client over a fixed list of endpoints.
pub struct Client {
    endpoints: Vec<Endpoint>,
    http: HttpClient,
    /// For streams: the same, but reads may wait [`STREAM_SILENCE_MAX`].
    streams: HttpClient,
    /// Index of the endpoint to try first: the last one that answered.
    preferred: usize,
    /// Time allowed for one request (a client for another endpoint gets the same).
    timeout: Duration,
    tls: Tls,
    /// `--user`: the credentials, and the token each endpoint gave for them (tokens are
    /// member-local, so each endpoint is asked once, when first used).
    user: Option<(String, String)>,
    tokens: std::sync::Mutex<Vec<Option<String>>>,
}

fn http_client(connect: Duration, read: Duration, tls: &Tls) -> Result<HttpClient, CtlError> {
    tls.apply(HttpClient::builder())?
        .timeout(read)
        .connect_timeout(connect)
        // Endpoints are cluster members, usually on loopback or a private network; an
        // HTTP_PROXY meant for the internet must not capture them.
        .no_proxy()
        .user_agent(concat!("synodctl/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| CtlError::Usage(format!("cannot build the HTTP client: {e}")))
}

impl Client {
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Client, CtlError> {
        Self::with_tls(endpoints, timeout, Tls::default())
    }

    /// [`Client::new`] over TLS where `tls` (or an endpoint's https://) says so.
    pub fn with_tls(endpoints: &[String], timeout: Duration, tls: Tls) -> Result<Client, CtlError> {
        let scheme = if tls.any() { "https" } else { "http" };
        let endpoints = endpoints
            .iter()
            .map(|e| {
                normalize_endpoint_with(e, scheme).map(|(display, base)| Endpoint { display, base })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(CtlError::Usage("no endpoints given".into()));
        }
        let tokens = std::sync::Mutex::new(vec![None; endpoints.len()]);
        Ok(Client {
            endpoints,
            http: http_client(timeout, timeout, &tls)?,
            streams: http_client(timeout, STREAM_SILENCE_MAX.max(timeout), &tls)?,
            preferred: 0,
            timeout,
            tls,
            user: None,
            tokens,
        })
    }

    /// Sends every request as `name:password` (etcdctl's `--user`); a name without a
    /// password is a usage error.
    pub fn with_user(mut self, user: &str) -> Result<Client, CtlError> {
        let (name, password) = user
            .split_once(':')
            .ok_or_else(|| CtlError::Usage("--user takes name:password (etcdctl's form)".into()))?;
        self.user = Some((name.to_string(), password.to_string()));
        Ok(self)
    }

    /// A client for one more endpoint (the leader, found by status), with this one's TLS
    /// files and `--user`.
    pub fn for_endpoint(&self, endpoint: String) -> Result<Client, CtlError> {
        let mut other = Client::with_tls(&[endpoint], self.timeout, self.tls.clone())?;
        other.user = self.user.clone();
        Ok(other)
    }

    /// The token endpoint `idx` gave for `--user`, asked for on first use (POST
    /// /v3/auth/authenticate on the same port); `None` without `--user`.
    fn token(&self, idx: usize) -> Result<Option<String>, Attempt> {
        let Some((name, password)) = &self.user else {
            return Ok(None);
        };
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = &tokens[idx] {
            return Ok(Some(t.clone()));
        }
        let url = format!("{}/v3/auth/authenticate", self.endpoints[idx].base);
        let body = serde_json::json!({"name": name, "password": password});
        let resp = self
            .http
            .post(url)
            .json(&body)
            .send()
            .map_err(|e| Attempt::Unreachable(describe(&e)))?;
        let status = resp.status();
        let bytes = read_body(resp).map_err(Attempt::Unreachable)?;
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        match answer.get("token").and_then(Value::as_str) {
            Some(t) if status.is_success() => {
                tokens[idx] = Some(t.to_string());
                Ok(Some(t.to_string()))
            }
            _ => {
                // The gateway's error body: {"error": text, "code": n, "message": text}.
                let message = answer
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no token in the answer");
                Err(Attempt::Final(CtlError::Usage(format!(
                    "--user {name}: {}: {message}",
                    self.endpoints[idx].display
                ))))
            }
        }
    }

    /// The TLS files this client was made with.
    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// host:port of the endpoint that will be tried first (the REPL's prompt).
    pub fn current_endpoint(&self) -> &str {
        &self.endpoints[self.preferred].display
    }

    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// Sends `req` with failover (see the module doc).
    pub fn send(&mut self, req: &Request) -> Result<Answer, CtlError> {
        self.failover(|client, idx| client.send_to(idx, req))
    }

    /// Like `send`, and also says whether an endpoint before the one that answered was tried
    /// without a definite answer (a timeout, a 503): a request that is not idempotent may
    /// have taken effect there, and the caller reads the final answer in that light.
    pub fn send_noting_retry(&mut self, req: &Request) -> (Result<Answer, CtlError>, bool) {
        let unanswered = std::cell::Cell::new(false);
        let result = self.failover(|client, idx| {
            let r = client.send_to(idx, req);
            if matches!(r, Err(Attempt::Unavailable(_) | Attempt::Unreachable(_))) {
                unanswered.set(true);
            }
            r
        });
        (result, unanswered.get())
    }

    /// Opens a response stream with failover; the stream's lines are read by the caller.
    pub fn open_stream(&mut self, req: &Request) -> Result<Stream, CtlError> {
        self.failover(|client, idx| {
            let resp = client.respond(&client.streams, idx, req)?;
            Ok(Stream {
                endpoint: client.endpoints[idx].display.clone(),
                reader: BufReader::new(resp),
            })
        })
    }

    /// Moves on from the endpoint tried first (after its stream broke, say).
    pub fn skip_preferred(&mut self) {
        self.preferred = (self.preferred + 1) % self.endpoints.len();
    }

    fn failover<T>(
        &mut self,
        attempt: impl Fn(&Self, usize) -> Result<T, Attempt>,
    ) -> Result<T, CtlError> {
        let n = self.endpoints.len();
        let mut attempts = Vec::new();
        let mut last_unavailable = None;
        for i in 0..n {
            let idx = (self.preferred + i) % n;
            match attempt(self, idx) {
                Ok(answer) => {
                    self.preferred = idx;
                    return Ok(answer);
                }
                Err(Attempt::Final(e)) => {
                    self.preferred = idx;
                    return Err(e);
                }
                Err(Attempt::Unavailable(e)) => {
                    attempts.push(e.to_string());
                    last_unavailable = Some(e);
                }
                Err(Attempt::Unreachable(reason)) => {
                    attempts.push(format!("{}: {reason}", self.endpoints[idx].display));
                }
            }
        }
        // Some endpoint answered, so the cluster is reachable but could not serve: report the
        // server's own error rather than "unreachable".
        Err(last_unavailable.unwrap_or(CtlError::Unreachable(attempts)))
    }

    /// Sends `req` to endpoint `idx` only — no failover (for `status --all`).
    pub fn send_one(&self, idx: usize, req: &Request) -> Result<Answer, CtlError> {
        match self.send_to(idx, req) {
            Ok(a) => Ok(a),
            Err(Attempt::Final(e) | Attempt::Unavailable(e)) => Err(e),
            Err(Attempt::Unreachable(reason)) => Err(CtlError::Unreachable(vec![format!(
                "{}: {reason}",
                self.endpoints[idx].display
            )])),
        }
    }

    fn send_to(&self, idx: usize, req: &Request) -> Result<Answer, Attempt> {
        let resp = self.respond(&self.http, idx, req)?;
        let status = resp.status();
        // A body cut short by a dropped connection is as good as no answer.
        let bytes = read_body(resp).map_err(Attempt::Unreachable)?;
        let endpoint = self.endpoints[idx].display.clone();
        serde_json::from_slice(&bytes)
            .map(|body| Answer {
                endpoint: endpoint.clone(),
                body,
            })
            .map_err(|e| {
                Attempt::Final(CtlError::BadAnswer {
                    endpoint,
                    reason: format!("HTTP {status} with a body that is not JSON: {e}"),
                })
            })
    }

    /// Sends `req` to endpoint `idx`: a 2xx response with its body unread, or the attempt's
    /// error (an error body is read and parsed).
    fn respond(&self, http: &HttpClient, idx: usize, req: &Request) -> Result<Response, Attempt> {
        let ep = &self.endpoints[idx];
        let mut url = Url::parse(&format!("{}{}", ep.base, req.path))
            .map_err(|e| Attempt::Final(CtlError::Usage(format!("bad request URL: {e}"))))?;
        if !req.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &req.query {
                pairs.append_pair(k, v);
            }
        }
        let mut builder = http.request(req.method.clone(), url);
        if let Some(token) = self.token(idx)? {
            builder = builder.header(reqwest::header::AUTHORIZATION, token);
        }
        if let Some(body) = &req.body {
            builder = builder.json(body);
        }
        let resp = builder
            .send()
            .map_err(|e| Attempt::Unreachable(describe(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = read_body(resp).map_err(Attempt::Unreachable)?;
        let err = server_error(ep.display.clone(), status, &bytes);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            Err(Attempt::Unavailable(err))
        } else {
            Err(Attempt::Final(err))
        }
    }
}

/// The outcome of one attempt on one endpoint.
enum Attempt {
    /// A definite answer: stop here.
    Final(CtlError),
    /// 503: try the next endpoint, but remember what this one said.
    Unavailable(CtlError),
    /// No answer at all (connect error, timeout, dropped connection).
    Unreachable(String),
}

fn read_body(resp: Response) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    resp.take(RESPONSE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading the answer: {e}"))?;
    if bytes.len() as u64 > RESPONSE_BYTES_MAX {
        return Err(format!("answer larger than {RESPONSE_BYTES_MAX} bytes"));
    }
    Ok(bytes)
}

/// Builds the error from an error body `{"error": {"code", "message"}}`; a body in another
/// shape (a proxy's HTML page, plain text) is quoted instead.
pub fn server_error(endpoint: String, status: StatusCode, bytes: &[u8]) -> CtlError {
    let body: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let field = |name: &str| {
        body.get("error")
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let (code, message) = match (field("code"), field("message")) {
        (Some(code), message) => (code, message.unwrap_or_default()),
        (None, _) => {
            let text = String::from_utf8_lossy(bytes);
            let mut quoted: String = text
                .trim()
                .chars()
                .take(ERROR_BODY_QUOTE_BYTES_MAX)
                .collect();
            if quoted.is_empty() {
                quoted = status.canonical_reason().unwrap_or("no body").to_string();
            }
            (format!("http_{}", status.as_u16()), quoted)
        }
    };
    CtlError::Server {
        endpoint,
        status: status.as_u16(),
        code,
        message,
        body,
    }
}

/// A short reason for a transport error: reqwest's Display hides the cause ("error sending
/// request"), which is the useful part ("Connection refused").
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} ({cause})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_one_encoded_segment() {
        assert_eq!(kv_path("a", "").unwrap(), "/v1/kv/a");
        assert_eq!(
            kv_path("dir/x y", "/cas").unwrap(),
            "/v1/kv/dir%2Fx%20y/cas"
        );
        assert_eq!(kv_path("100%?#", "").unwrap(), "/v1/kv/100%25%3F%23");
        assert_eq!(kv_path("é", "").unwrap(), "/v1/kv/%C3%A9");
        assert_eq!(kv_path("a..b", "").unwrap(), "/v1/kv/a..b");
        for bad in ["", ".", ".."] {
            assert_eq!(kv_path(bad, "").unwrap_err().exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn endpoints_normalize() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:7001").unwrap(),
            ("127.0.0.1:7001".into(), "http://127.0.0.1:7001".into())
        );
        assert_eq!(
            normalize_endpoint("http://localhost:8/").unwrap(),
            ("localhost:8".into(), "http://localhost:8".into())
        );
        assert_eq!(normalize_endpoint("node1").unwrap().0, "node1:80");
        // https:// is taken as given; TLS flags make a bare host:port https.
        assert_eq!(
            normalize_endpoint("https://a:1").unwrap(),
            ("a:1".into(), "https://a:1".into())
        );
        assert_eq!(
            normalize_endpoint_with("a:1", "https").unwrap().1,
            "https://a:1"
        );
        for bad in ["", "ftp://a:1", "a:1/x", "a:notaport"] {
            assert_eq!(
                normalize_endpoint(bad).unwrap_err().exit_code(),
                2,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn error_bodies() {
        let body =
            json!({"error": {"code": "cas_conflict", "message": "version is 2"}, "kv": null});
        let e = server_error(
            "h:1".into(),
            StatusCode::CONFLICT,
            body.to_string().as_bytes(),
        );
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.to_string(),
            "cas_conflict: version is 2 (HTTP 409 from h:1)"
        );
        let CtlError::Server { body: b, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(b, &body, "the whole body is kept for the caller");

        let e = server_error("h:1".into(), StatusCode::BAD_GATEWAY, b"<html>proxy</html>");
        assert_eq!(
            e.to_string(),
            "http_502: <html>proxy</html> (HTTP 502 from h:1)"
        );
        let e = server_error("h:1".into(), StatusCode::NOT_FOUND, b"");
        assert_eq!(e.to_string(), "http_404: Not Found (HTTP 404 from h:1)");
    }

    #[test]
    fn unreachable_endpoints_fail_over_then_exit_3() {
        // Port 1 on loopback: nothing listens there in a test sandbox; the connect is refused
        // at once, so this test does not wait for the timeout.
        let mut c = Client::new(
            &["127.0.0.1:1".to_string(), "127.0.0.1:1".to_string()],
            Duration::from_secs(2),
        )
        .unwrap();
        let err = c
            .send(&Request::new(Method::GET, "/v1/status".into()))
            .unwrap_err();
        assert_eq!(err.exit_code(), 3, "{err}");
        let CtlError::Unreachable(attempts) = err else {
            panic!()
        };
        assert_eq!(attempts.len(), 2, "both endpoints tried: {attempts:?}");
    }
}
