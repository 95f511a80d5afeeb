//! The HTTP side: one POST of a capture body to `<ATOCORE_URL>/interactions`.
//!
//! Plain HTTP only (AtoCore is a local service), no proxy (a proxy variable set for other
//! tools must not route loopback traffic away), no redirects, one global timeout per
//! request taken from what is left of the run's time budget.

use std::io::Read;
use std::time::Duration;

use crate::error::Error;

/// What a delivery attempt came to.
#[derive(Debug)]
pub enum Delivery {
    /// 2xx: the server has it.
    Delivered(u16),
    /// Keep it and try again later (connection error, timeout, 408, 429, 5xx, 3xx).
    Retry(Error),
    /// The server refused it for good (another 4xx).
    Rejected(Error),
}

/// POSTs `body` (JSON bytes) to `url` within `timeout`.
pub fn post(url: &str, body: &[u8], timeout: Duration) -> Delivery {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .user_agent(concat!("atocore-capture/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body);
    let mut response = match response {
        Ok(r) => r,
        Err(e) => {
            return Delivery::Retry(Error::Unreachable {
                url: url.to_string(),
                reason: e.to_string(),
            });
        }
    };
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Delivery::Delivered(status);
    }
    if status == 408 || status == 429 || !(400..500).contains(&status) {
        return Delivery::Retry(Error::Retryable {
            url: url.to_string(),
            status,
        });
    }
    let mut text = Vec::new();
    let _ = response
        .body_mut()
        .as_reader()
        .take(300)
        .read_to_end(&mut text);
    Delivery::Rejected(Error::Rejected {
        url: url.to_string(),
        status,
        body: String::from_utf8_lossy(&text).trim().replace('\n', " "),
    })
}
