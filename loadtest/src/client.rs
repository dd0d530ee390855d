//! The HTTP client: hyper 1 with hyper-util's pooled client (HTTP/1.1 keep-alive, one connection per
//! request in flight), plus the pre-built parts every request reuses.
//!
//! Requests are assembled from parts parsed once ([`Endpoints`] URIs and bearer-token header values,
//! whose clones are reference-count bumps) rather than through `Request::builder`, which re-validates
//! every header on every call. The generator shares two cores with the server; every microsecond it
//! spends is one the server does not get.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why a client could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server URL is not a plain `http://host:port` URL.
    #[error(
        "server URL {url:?} is not usable: {reason} (expected e.g. http://127.0.0.1:8080; the \
         generator speaks plain HTTP, put it next to the server or behind the TLS terminator)"
    )]
    BadServer {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A token cannot be sent as an HTTP header value.
    #[error("a bearer token contains characters that cannot go in an HTTP header")]
    BadToken,
}

/// A request that got no HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoAnswer {
    /// Could not connect.
    Connect,
    /// No complete answer within the timeout.
    Timeout,
    /// The connection failed mid-request or mid-answer.
    Transport,
}

impl NoAnswer {
    /// The error code used for this in reports (status 0).
    pub fn code(self) -> &'static str {
        match self {
            NoAnswer::Connect => "connect_failed",
            NoAnswer::Timeout => "timeout",
            NoAnswer::Transport => "connection_error",
        }
    }
}

/// A complete HTTP answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// The URIs of the fixed endpoints, parsed once.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    base: String,
    pub healthz: Uri,
    pub checkins: Uri,
    pub doses: Uri,
    pub doses_batch: Uri,
    pub doses_lookup: Uri,
    pub verify: Uri,
}

impl Endpoints {
    /// Parses `server` (`http://host:port`, an optional trailing slash) and the fixed endpoints.
    pub fn new(server: &str) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::BadServer {
            url: server.to_owned(),
            reason: reason.to_owned(),
        };
        let base = server.trim_end_matches('/').to_owned();
        let uri: Uri = base.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("the scheme must be http"));
        }
        if uri.host().is_none() {
            return Err(bad("no host"));
        }
        let at = |path: &str| -> Result<Uri, ClientError> {
            format!("{base}{path}")
                .parse()
                .map_err(|_| bad("cannot append an API path to it"))
        };
        Ok(Self {
            healthz: at("/healthz")?,
            checkins: at("/v1/checkins")?,
            doses: at("/v1/doses")?,
            doses_batch: at("/v1/doses:batch")?,
            doses_lookup: at("/v1/doses:lookup")?,
            verify: at("/v1/verify")?,
            base,
        })
    }

    /// The URI of a per-request path such as `/v1/people/P000000042/pass`. Person codes come from the
    /// campaign file; one that cannot go in a URL is reported as a client-side error by the caller.
    pub fn path(&self, path: &str) -> Option<Uri> {
        format!("{}{path}", self.base).parse().ok()
    }
}

/// `Authorization: Bearer <token>`, ready to clone into requests.
pub(crate) fn bearer(token: &str) -> Result<HeaderValue, ClientError> {
    let mut value =
        HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| ClientError::BadToken)?;
    // Keeps the token out of any debug output of the request.
    value.set_sensitive(true);
    Ok(value)
}

/// The pooled HTTP/1.1 client.
#[derive(Debug, Clone)]
pub(crate) struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// A client keeping up to `pool` idle keep-alive connections (size it to the concurrency, so a
    /// connection is never closed only to be reopened a moment later), and giving each request
    /// `timeout` for its complete answer.
    pub fn new(pool: usize, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        // Requests are small and latency is what we measure: don't let Nagle hold them back.
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let inner = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool)
            .build(connector);
        Self { inner, timeout }
    }

    /// `GET uri`, with the bearer token if any.
    pub fn get(uri: Uri, auth: Option<&HeaderValue>) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = uri;
        if let Some(auth) = auth {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, auth.clone());
        }
        request
    }

    /// `POST uri` with a JSON body, with the bearer token if any.
    pub fn post_json(uri: Uri, auth: Option<&HeaderValue>, body: Vec<u8>) -> Request<Full<Bytes>> {
        let mut request = Self::get(uri, auth);
        *request.method_mut() = Method::POST;
        *request.body_mut() = Full::new(Bytes::from(body));
        request.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        request
    }

    /// Sends `request` and reads the whole answer (reading it to the end is what lets the connection
    /// go back to the pool for the next request).
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<Answer, NoAnswer> {
        let exchange = async {
            let response = self.inner.request(request).await.map_err(|e| {
                if e.is_connect() {
                    NoAnswer::Connect
                } else {
                    NoAnswer::Transport
                }
            })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|_| NoAnswer::Transport)?
                .to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(NoAnswer::Timeout))
    }
}

/// The stable `error` code of an error answer (`{"error": "...", "message": "..."}`), or a marker
/// saying the answer broke that contract.
pub(crate) fn error_code(body: &[u8]) -> std::borrow::Cow<'_, str> {
    #[derive(serde::Deserialize)]
    struct ErrorBody<'a> {
        #[serde(borrow)]
        error: std::borrow::Cow<'a, str>,
    }
    match serde_json::from_slice::<ErrorBody<'_>>(body) {
        Ok(parsed) => parsed.error,
        Err(_) => "no_error_body".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_plain_http_only() {
        let endpoints = Endpoints::new("http://127.0.0.1:8080/").expect("valid");
        assert_eq!(
            endpoints.doses_batch.to_string(),
            "http://127.0.0.1:8080/v1/doses:batch"
        );
        assert_eq!(
            endpoints
                .path("/v1/people/P000000001/pass")
                .map(|u| u.to_string())
                .as_deref(),
            Some("http://127.0.0.1:8080/v1/people/P000000001/pass")
        );
        assert!(Endpoints::new("https://example.org").is_err());
        assert!(Endpoints::new("127.0.0.1:8080").is_err());
        assert!(Endpoints::new("").is_err());
    }

    #[test]
    fn error_codes_come_from_the_body() {
        assert_eq!(
            error_code(br#"{"error":"too_early","message":"wait"}"#),
            "too_early"
        );
        assert_eq!(error_code(b"<html>oops</html>"), "no_error_body");
    }
}
