//! JSON in and out of HTTP bodies: a capped, time-bounded body reader that parses into
//! a strict request type, and the response builders (every answer is JSON, except
//! `/metrics`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// The response type of every handler.
pub type Reply = Response<Full<Bytes>>;

/// How much of an unread request body is read and thrown away after the answer, at most.
pub const DRAIN_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// How long an unread request body is read and thrown away after the answer, at most.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(5);

/// Read the body (at most `limit` bytes, within `timeout`) and parse it as `T`.
/// An empty body parses as `{}`, so `T`'s defaults apply.
///
/// `body` is left as read: `None` once read to its end (or past saving: a broken or
/// too-slow body), still `Some` with the unread rest when refused for its size, so that
/// [`finish`] can drain it after the answer.
pub async fn read<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &mut Option<Incoming>,
    limit: usize,
    timeout: Duration,
) -> Result<T, Error> {
    if let Some(len) = headers.get(CONTENT_LENGTH)
        && len
            .to_str()
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > limit as u64)
    {
        return Err(Error::PayloadTooLarge { limit });
    }
    let mut bytes = Vec::new();
    if let Some(incoming) = body.as_mut() {
        let collect = async {
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|e| {
                    Error::bad_request(
                        "bad_body",
                        format!("the request body could not be read: {e}"),
                    )
                })?;
                if let Ok(data) = frame.into_data() {
                    if bytes.len() + data.len() > limit {
                        return Err(Error::PayloadTooLarge { limit });
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, collect).await {
            Err(_) => {
                *body = None;
                return Err(Error::BodyTimeout(timeout.as_millis()));
            }
            Ok(Err(e @ Error::PayloadTooLarge { .. })) => return Err(e),
            Ok(Err(e)) => {
                *body = None;
                return Err(e);
            }
            Ok(Ok(())) => *body = None,
        }
    }
    let text = if bytes.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        &bytes[..]
    };
    let bad = |e: String| {
        Error::bad_request(
            "bad_json",
            format!("the request body is not the expected JSON object ({e})"),
        )
    };
    let value: serde_json::Value = serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
    if !value.is_object() {
        return Err(bad(format!("got {value}, want an object such as {{}}")));
    }
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}

/// Finish a response whose request body was left unread (`body` still `Some`): the
/// answer says `connection: close`, and the rest of the body is read and thrown away in
/// the background, at most [`DRAIN_MAX_BYTES`] within [`DRAIN_MAX_TIME`] (less if
/// `stop` fires), before the connection closes. A client that writes its whole request
/// before it reads the answer then gets the answer instead of a reset. A body that
/// declares more than the bound is not drained: it could not be read in full anyway.
pub fn finish(reply: &mut Reply, body: Option<Incoming>, stop: CancellationToken) {
    let Some(mut body) = body else { return };
    if body.is_end_stream() {
        return;
    }
    reply
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    if body
        .size_hint()
        .exact()
        .is_some_and(|n| n > DRAIN_MAX_BYTES)
    {
        return;
    }
    tokio::spawn(async move {
        let mut left = DRAIN_MAX_BYTES;
        let discard = async {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    let Some(rest) = left.checked_sub(data.len() as u64) else {
                        break;
                    };
                    left = rest;
                }
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(DRAIN_MAX_TIME, discard) => {}
            () = stop.cancelled() => {}
        }
    });
}

/// A JSON response.
pub fn reply<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"null".to_vec());
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A response with an already-serialized JSON body.
pub fn bytes(status: StatusCode, body: Bytes) -> Reply {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The contract's error body with the error's status (plus `Allow` on 405 and
/// `WWW-Authenticate` on 401).
pub fn error(e: &Error) -> Reply {
    let mut r = reply(e.status(), &e.body());
    match e {
        Error::MethodNotAllowed { allowed, .. } => {
            r.headers_mut()
                .insert("allow", HeaderValue::from_static(allowed));
        }
        Error::Unauthorized(_) => {
            r.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        _ => {}
    }
    r
}

/// A plain-text response (`/metrics`).
pub fn text(content_type: &'static str, body: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
