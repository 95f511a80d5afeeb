//! JSON in and out of HTTP bodies: a capped, time-bounded body reader that parses into
//! a strict request type, and the response builders (every answer is JSON, except
//! `/metrics`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// The response type of every handler.
pub type Reply = Response<Full<Bytes>>;

/// Read the body (at most `limit` bytes, within `timeout`) and parse it as `T`.
/// An empty body parses as `{}`, so `T`'s defaults apply.
pub async fn read<T: DeserializeOwned>(
    req: Request<Incoming>,
    limit: usize,
    timeout: Duration,
) -> Result<T, Error> {
    if let Some(len) = req.headers().get(CONTENT_LENGTH)
        && len
            .to_str()
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > limit as u64)
    {
        return Err(Error::PayloadTooLarge { limit });
    }
    let body = Limited::new(req.into_body(), limit);
    let bytes = match tokio::time::timeout(timeout, body.collect()).await {
        Err(_) => return Err(Error::BodyTimeout(timeout.as_millis())),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Error::PayloadTooLarge { limit });
        }
        Ok(Err(e)) => {
            return Err(Error::bad_request(
                "bad_body",
                format!("the request body could not be read: {e}"),
            ));
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
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
