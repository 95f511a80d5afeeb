//! A small blocking client for atocore's own HTTP API (`ATOCORE_URL`): its `/health`
//! (for `build_sha`), and the memory endpoints the drill uses. Call it from blocking
//! threads only (it uses `ureq`).

use std::time::Duration;

use serde_json::Value;

/// What atocore's `/health` said.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// HTTP status.
    pub status: u16,
    /// `status` field of the body (`ok` when healthy).
    pub state: Option<String>,
    pub build_sha: Option<String>,
}

impl Health {
    pub fn is_ok(&self) -> bool {
        self.status == 200 && self.state.as_deref().is_none_or(|s| s == "ok")
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// `GET <base>/health`. `Err` with a one-line reason when atocore does not answer.
pub fn health(base: &str, timeout: Duration) -> Result<Health, String> {
    let url = format!("{base}/health");
    let r = agent(timeout).get(&url).call().map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body: Value = r.into_body().read_json().unwrap_or(Value::Null);
    Ok(Health {
        status,
        state: body
            .get("status")
            .and_then(Value::as_str)
            .map(str::to_owned),
        build_sha: body
            .get("build_sha")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// atocore's `build_sha`, or `None` when atocore does not answer in time.
pub fn build_sha(base: &str) -> Option<String> {
    match health(base, Duration::from_secs(2)) {
        Ok(h) => h.build_sha,
        Err(e) => {
            tracing::debug!(url = base, cause = %e, "atocore /health did not answer; build_sha unknown");
            None
        }
    }
}

/// `POST <base>/memory` with a JSON body; the response status and body.
pub fn post_json(
    base: &str,
    path: &str,
    body: &Value,
    timeout: Duration,
) -> Result<(u16, Value), String> {
    let url = format!("{base}{path}");
    let r = agent(timeout)
        .post(&url)
        .send_json(body)
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let v = r.into_body().read_json().unwrap_or(Value::Null);
    Ok((status, v))
}

/// `GET <base><path_and_query>`; the response status and body.
pub fn get_json(
    base: &str,
    path_and_query: &str,
    timeout: Duration,
) -> Result<(u16, Value), String> {
    let url = format!("{base}{path_and_query}");
    let r = agent(timeout).get(&url).call().map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let v = r.into_body().read_json().unwrap_or(Value::Null);
    Ok((status, v))
}
