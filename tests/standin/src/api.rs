//! The HTTP endpoints, the same the real AtoCore service offers to this project:
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /health` | `{"status":"ok","service":"atocore-standin","build_sha":...,"memories":N}` |
//! | `POST /memory` | 201 `{"id":...}` (200 when the same memory already exists) |
//! | `GET /memory?project=X` | `{"memories":[{id,memory_type,content,project,confidence,created_at}]}` |
//! | `POST /interactions` | 200 `{"id":...}`; 422 with `{"error","message","detail":[...]}` for a bad body |
//! | `GET /stats` | row counts |
//! | `GET /projects` | `{"projects":[...]}` from the registry file, `[]` when it is absent |

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::payload::{self, FieldError};
use crate::registry;
use crate::service::Service;

/// Largest request body accepted (a captured turn can be long).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Answers one request.
pub async fn handle(
    req: Request<Incoming>,
    service: Service,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let response = match (method.clone(), path.as_str()) {
        (Method::GET, "/health") => health(&service).await,
        (Method::POST, "/memory") => match body(req).await {
            Ok(bytes) => add_memory(&service, &bytes).await,
            Err(response) => response,
        },
        (Method::GET, "/memory") => list_memories(&service, query.as_deref()).await,
        (Method::POST, "/interactions") => match body(req).await {
            Ok(bytes) => add_interaction(&service, &bytes).await,
            Err(response) => response,
        },
        (Method::GET, "/stats") => stats(&service).await,
        (Method::GET, "/projects") => projects(&service),
        (_, "/health" | "/memory" | "/interactions" | "/stats" | "/projects") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{method} is not allowed on {path}"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no endpoint {path}"),
        ),
    };
    tracing::debug!(%method, %path, status = response.status().as_u16(), "request");
    Ok(response)
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": code, "message": message }))
}

fn internal(err: &crate::StandinError) -> Response<Full<Bytes>> {
    tracing::error!(cause = %err, "request failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_error",
        &err.to_string(),
    )
}

fn unprocessable(details: &[FieldError]) -> Response<Full<Bytes>> {
    let message = details
        .iter()
        .map(|d| format!("{}: {}", d.loc.join("."), d.msg))
        .collect::<Vec<_>>()
        .join("; ");
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({ "error": "invalid_body", "message": message, "detail": details }),
    )
}

async fn body(req: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "body_unreadable",
            &e.to_string(),
        )),
    }
}

async fn health(service: &Service) -> Response<Full<Bytes>> {
    match service.counts().await {
        Ok((counts, _)) => json_response(
            StatusCode::OK,
            &json!({
                "status": "ok",
                "service": "atocore-standin",
                "standin": true,
                "build_sha": service.config().build_sha,
                "memories": counts.memories,
            }),
        ),
        Err(e) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({
                "status": "error",
                "service": "atocore-standin",
                "standin": true,
                "build_sha": service.config().build_sha,
                "message": e.to_string(),
            }),
        ),
    }
}

async fn add_memory(service: &Service, body: &[u8]) -> Response<Full<Bytes>> {
    let new = match payload::memory(body) {
        Ok(new) => new,
        Err(details) => return unprocessable(&details),
    };
    match service.add_memory(new).await {
        Ok((memory, created)) => {
            if created {
                tracing::info!(id = %memory.id, project = %memory.project, "memory added");
            }
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            json_response(
                status,
                &json!({ "id": memory.id, "created": created, "memory": memory }),
            )
        }
        Err(e) => internal(&e),
    }
}

async fn list_memories(service: &Service, query: Option<&str>) -> Response<Full<Bytes>> {
    let project = query.and_then(|q| query_param(q, "project"));
    match service.memories(project).await {
        Ok(memories) => json_response(StatusCode::OK, &json!({ "memories": memories })),
        Err(e) => internal(&e),
    }
}

async fn add_interaction(service: &Service, body: &[u8]) -> Response<Full<Bytes>> {
    let turn = match payload::interaction(body) {
        Ok(turn) => turn,
        Err(details) => return unprocessable(&details),
    };
    match service.add_interaction(turn).await {
        Ok(id) => json_response(StatusCode::OK, &json!({ "id": id, "status": "captured" })),
        Err(e) => internal(&e),
    }
}

async fn stats(service: &Service) -> Response<Full<Bytes>> {
    match service.counts().await {
        Ok((counts, embeddings)) => json_response(
            StatusCode::OK,
            &json!({
                "memories": counts.memories,
                "interactions": counts.interactions,
                "heartbeats": counts.heartbeats,
                "embeddings": embeddings,
            }),
        ),
        Err(e) => internal(&e),
    }
}

fn projects(service: &Service) -> Response<Full<Bytes>> {
    match registry::projects(&service.config().registry_path) {
        Ok(projects) => json_response(StatusCode::OK, &json!({ "projects": projects })),
        Err(e) => {
            tracing::warn!(cause = %e, "project registry unreadable");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "registry_invalid",
                &e.to_string(),
            )
        }
    }
}

/// The first value of `name` in a URL query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2]))
            {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            query_param("a=1&project=my%20proj+x", "project").as_deref(),
            Some("my proj x")
        );
        assert_eq!(query_param("project=", "project").as_deref(), Some(""));
        assert_eq!(query_param("a=1", "project"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%41"), "A");
    }
}
