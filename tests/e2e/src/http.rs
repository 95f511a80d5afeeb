//! JSON over HTTP for the tests, and polling.

use std::time::{Duration, Instant};

use serde_json::Value;

/// How long the plain helpers wait for an answer.
const TIMEOUT: Duration = Duration::from_secs(15);

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .new_agent()
}

/// `GET url` → (status, JSON body); `Err` when nothing answers.
pub fn get(url: &str) -> Result<(u16, Value), String> {
    let response = agent(TIMEOUT)
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
    let response = agent(TIMEOUT)
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

/// A request with optional `Authorization` header and JSON body → (status, JSON body
/// or `Value::Null` when the body is not JSON).
pub fn call(
    method: &str,
    url: &str,
    authorization: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let body = body.map(Value::to_string);
    let answer = request(method, url, authorization, body.as_deref(), TIMEOUT)?;
    Ok((answer.status, answer.json))
}

/// An HTTP answer: status, body text, body as JSON (`Value::Null` when it is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub text: String,
    pub json: Value,
}

/// One request with an optional `Authorization` header and a raw body, under `timeout`.
/// `Err` when nothing answers (connection refused or reset, timeout).
pub fn request(
    method: &str,
    url: &str,
    authorization: Option<&str>,
    body: Option<&str>,
    timeout: Duration,
) -> Result<Answer, String> {
    let agent = agent(timeout);
    let response = match method {
        "GET" => {
            let mut req = agent.get(url);
            if let Some(auth) = authorization {
                req = req.header("Authorization", auth);
            }
            req.call()
        }
        "POST" => {
            let mut req = agent.post(url).header("Content-Type", "application/json");
            if let Some(auth) = authorization {
                req = req.header("Authorization", auth);
            }
            match body {
                Some(body) => req.send(body),
                None => req.send_empty(),
            }
        }
        _ => return Err(format!("unsupported method {method}")),
    }
    .map_err(|e| format!("{method} {url}: {e}"))?;
    let status = response.status().as_u16();
    let text = response
        .into_body()
        .read_to_string()
        .map_err(|e| format!("{method} {url}: body: {e}"))?;
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Answer { status, text, json })
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
