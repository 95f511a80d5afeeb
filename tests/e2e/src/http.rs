//! JSON over HTTP for the tests, and polling.

use std::time::{Duration, Instant};

use serde_json::Value;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .new_agent()
}

/// `GET url` → (status, JSON body); `Err` when nothing answers.
pub fn get(url: &str) -> Result<(u16, Value), String> {
    let response = agent()
        .get(url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .read_json()
        .map_err(|e| format!("GET {url}: body: {e}"))?;
    Ok((status, body))
}

/// `POST url` with a JSON body → (status, JSON body).
pub fn post(url: &str, body: &Value) -> Result<(u16, Value), String> {
    let response = agent()
        .post(url)
        .send_json(body)
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .read_json()
        .map_err(|e| format!("POST {url}: body: {e}"))?;
    Ok((status, body))
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `timeout` with
/// `what` and the last note `check` left.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut(&mut String) -> Option<T>,
) -> T {
    let started = Instant::now();
    let mut note = String::new();
    loop {
        if let Some(value) = check(&mut note) {
            return value;
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last: {note}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
