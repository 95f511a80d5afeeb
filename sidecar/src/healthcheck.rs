//! `atocore-sidecar healthcheck`: probe `/health` over HTTP and exit 0/1 (the image's
//! HEALTHCHECK; a scratch image has no curl).
//!
//! Healthy: HTTP 200 with a JSON body whose `status` is `ok` or `degraded` (the sidecar
//! works; `degraded` is about stale backups). With `--strict`, only `ok`.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

/// The URL probed by default: the listening address, with an unspecified IP
/// (`0.0.0.0`, `::`) read as loopback.
pub fn default_url(addr: &SocketAddr) -> String {
    let mut a = *addr;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    format!("http://{a}/health")
}

/// Probe `url`; the body when healthy.
pub fn probe(url: &str, timeout: Duration, strict: bool) -> Result<Value> {
    let unhealthy = |message: String| Error::Unhealthy {
        url: url.to_string(),
        message,
    };
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let r = agent
        .get(url)
        .call()
        .map_err(|e| unhealthy(e.to_string()))?;
    let status = r.status();
    let body: Value = r
        .into_body()
        .read_json()
        .map_err(|e| unhealthy(format!("HTTP {status}, body is not JSON ({e})")))?;
    let state = body.get("status").and_then(Value::as_str).unwrap_or("");
    let fine = status == 200 && (state == "ok" || (!strict && state == "degraded"));
    if !fine {
        return Err(unhealthy(format!(
            "HTTP {status}, status `{state}`: {body}"
        )));
    }
    Ok(body)
}
