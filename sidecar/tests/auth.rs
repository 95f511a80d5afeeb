//! Bearer-token auth on /admin/*.

use crate::util::{Sidecar, TOKEN, stamps};

fn with_token() -> Sidecar {
    Sidecar::start_with(|s| {
        s.set("--token", TOKEN);
    })
}

#[test]
fn admin_endpoints_need_the_token() {
    let sc = with_token();
    for (method, path, body) in [
        ("GET", "/admin/backup", ""),
        ("POST", "/admin/backup", "{}"),
        ("POST", "/admin/backup/prune", "{}"),
        ("GET", "/admin/backup/20200101T000000Z/validate", ""),
        ("POST", "/admin/restore", r#"{"stamp":"20200101T000000Z"}"#),
        ("POST", "/admin/drill", ""),
        ("GET", "/admin/drill", ""),
        ("GET", "/admin/unknown", ""),
        ("DELETE", "/admin/backup", ""),
    ] {
        let r = sc.request(method, path, &[], body);
        r.assert_error(401, "unauthorized");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .contains("ATOCORE_SIDECAR_TOKEN")
        );
        for bad in [
            "Bearer wrong-token-0123456789abcdef",
            "Bearer ",
            "Basic dGVzdA==",
            TOKEN,
            &format!("Bearer {TOKEN}x"),
        ] {
            sc.request(method, path, &[("authorization", bad)], body)
                .assert_error(401, "unauthorized");
        }
    }
    assert!(
        stamps(&sc.paths).is_empty(),
        "nothing ran without the token"
    );
}

#[test]
fn the_right_token_works_and_health_and_metrics_are_open() {
    let sc = with_token();
    let auth = format!("Bearer {TOKEN}");
    let r = sc.request("POST", "/admin/backup", &[("authorization", &auth)], "{}");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = sc.request(
        "GET",
        "/admin/backup",
        &[("authorization", &format!("bearer {TOKEN}"))],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(sc.request("GET", "/health", &[], "").status, 200);
    assert_eq!(sc.request("GET", "/metrics", &[], "").status, 200);
}
