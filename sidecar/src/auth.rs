//! Bearer-token check for `/admin/*`.
//!
//! The comparison is constant-time in the token's content (`subtle`); only a length
//! difference returns early, which reveals the length and nothing else. With no token
//! configured (loopback only, see [`crate::config`]) every request passes.

use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

use crate::error::Error;

/// Check `Authorization: Bearer <token>` against the configured token.
pub fn check(headers: &HeaderMap, token: Option<&str>) -> Result<(), Error> {
    let Some(want) = token else {
        return Ok(());
    };
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(Error::Unauthorized(
            "this endpoint needs `Authorization: Bearer <token>` with the token from ATOCORE_SIDECAR_TOKEN",
        ));
    };
    let got = value.as_bytes();
    let scheme = b"bearer ";
    if got.len() < scheme.len() || !got[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return Err(Error::Unauthorized(
            "the Authorization header must be `Bearer <token>` with the token from ATOCORE_SIDECAR_TOKEN",
        ));
    }
    let presented = got[scheme.len()..].trim_ascii();
    if bool::from(presented.ct_eq(want.as_bytes())) {
        Ok(())
    } else {
        Err(Error::Unauthorized(
            "wrong token: use the value of ATOCORE_SIDECAR_TOKEN from the sidecar's environment (.env)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(AUTHORIZATION, v.parse().unwrap());
        m
    }

    #[test]
    fn accepts_only_the_right_token() {
        assert!(check(&HeaderMap::new(), None).is_ok());
        assert!(check(&h("Bearer abc"), Some("abc")).is_ok());
        assert!(check(&h("bearer abc"), Some("abc")).is_ok());
        assert!(check(&h("Bearer abd"), Some("abc")).is_err());
        assert!(check(&h("Bearer ab"), Some("abc")).is_err());
        assert!(check(&h("Basic abc"), Some("abc")).is_err());
        assert!(check(&h("Bearer"), Some("abc")).is_err());
        assert!(check(&HeaderMap::new(), Some("abc")).is_err());
    }
}
