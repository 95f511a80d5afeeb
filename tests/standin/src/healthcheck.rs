//! `atocore-standin healthcheck`: probes `/health` over HTTP (a scratch image has no curl).

use std::time::Duration;

use serde_json::Value;

use crate::error::StandinError;

/// GETs `url`; healthy means 200 with `"status": "ok"`. Returns the body.
pub fn probe(url: &str, timeout: Duration) -> Result<Value, StandinError> {
    let unhealthy = |message: String| StandinError::Unhealthy {
        url: url.to_owned(),
        message,
    };
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let response = agent
        .get(url)
        .call()
        .map_err(|e| unhealthy(e.to_string()))?;
    let status = response.status();
    let body: Value = response
        .into_body()
        .read_json()
        .map_err(|e| unhealthy(format!("HTTP {status}, body is not JSON ({e})")))?;
    if status != 200 || body.get("status").and_then(Value::as_str) != Some("ok") {
        return Err(unhealthy(format!("HTTP {status}: {body}")));
    }
    Ok(body)
}
