//! Bad input never changes anything and never takes the service down.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::{Sidecar, snapshot_entries, stamps};

#[test]
fn malformed_or_unexpected_json_is_400_and_changes_nothing() {
    let sc = Sidecar::start();
    for body in [
        "{",
        "not json",
        "[]",
        "null",
        "42",
        r#"{"include_chroma": "yes"}"#,
        r#"{"include_chroma": 1}"#,
        r#"{"include_croma": true}"#,
        r#"{"include_chroma": true, "extra": 1}"#,
        "\u{feff}{}",
    ] {
        sc.post("/admin/backup", body).assert_error(400, "bad_json");
    }
    for body in ["{", r#"{"dry_run": "false"}"#, r#"{"dryrun": true}"#] {
        sc.post("/admin/backup/prune", body)
            .assert_error(400, "bad_json");
    }
    for body in ["{}", r#"{"stamp": 1}"#, r#"{"stamp": "x", "force": true}"#] {
        sc.post("/admin/restore", body)
            .assert_error(400, "bad_json");
    }
    sc.post("/admin/restore", r#"{"stamp": "../../etc"}"#)
        .assert_error(400, "bad_stamp");
    sc.post("/admin/drill", r#"{"x": 1}"#)
        .assert_error(400, "bad_json");
    assert!(
        snapshot_entries(&sc.paths).is_empty(),
        "{:?}",
        snapshot_entries(&sc.paths)
    );
    assert_eq!(sc.get("/health").status, 200);
}

#[test]
fn oversized_bodies_are_413() {
    let sc = Sidecar::start_with(|s| {
        s.set("--max-body-bytes", "1024");
    });
    let big = format!(
        r#"{{"include_chroma": false, "pad": "{}"}}"#,
        "x".repeat(4096)
    );
    sc.post("/admin/backup", &big)
        .assert_error(413, "body_too_large");
    // Chunked, no content-length: cut off while reading.
    let chunk = "x".repeat(4000);
    let req = format!(
        "POST /admin/backup HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let out = sc.raw(req.as_bytes(), Duration::from_secs(5));
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    // A huge declared length is refused before reading.
    let out = sc.raw(
        b"POST /admin/backup/prune HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999999\r\n\r\n{}",
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(stamps(&sc.paths).is_empty());
    assert_eq!(sc.get("/health").status, 200);
}

#[test]
fn garbage_and_broken_requests_do_not_crash_the_service() {
    let sc = Sidecar::start();
    for junk in [
        &b"\x00\x01\x02\xff\xfe garbage\r\n\r\n"[..],
        b"GET /health HTTP/9.9\r\n\r\n",
        b"GET\r\n\r\n",
        b"POST /admin/backup HTTP/1.1\r\ncontent-length: -5\r\n\r\n",
        b"POST /admin/backup HTTP/1.1\r\ncontent-length: 10\r\ncontent-length: 2\r\n\r\n{}",
        b"GET /admin/backup/\xff\xfe/validate HTTP/1.1\r\nhost: x\r\n\r\n",
    ] {
        let out = sc.raw(junk, Duration::from_secs(3));
        assert!(out.is_empty() || out.starts_with("HTTP/1.1 4"), "{out}");
    }
    // Headers far too large.
    let huge = format!(
        "GET /health HTTP/1.1\r\nx-pad: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let out = sc.raw(huge.as_bytes(), Duration::from_secs(3));
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 431"), "{out}");
    assert_eq!(sc.get("/health").status, 200);
    assert!(stamps(&sc.paths).is_empty());
}

#[test]
fn slow_and_idle_clients_time_out() {
    let sc = Sidecar::start_with(|s| {
        s.set("--header-timeout-ms", "300")
            .set("--body-timeout-ms", "300");
    });
    // Idle: connects and sends nothing.
    let started = Instant::now();
    let mut idle = TcpStream::connect(sc.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = idle.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "idle connection kept {:?}",
        started.elapsed()
    );

    // Slow headers: half a request line, then nothing.
    let started = Instant::now();
    let mut slow = TcpStream::connect(sc.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET /hea").unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(5));

    // Slow body: headers promise 100 bytes, 2 arrive.
    let mut body = TcpStream::connect(sc.addr).unwrap();
    body.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    body.write_all(b"POST /admin/backup HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"")
        .unwrap();
    let mut out = String::new();
    let _ = body.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("body_timeout"), "{out}");
    assert!(stamps(&sc.paths).is_empty());
    assert_eq!(sc.get("/health").status, 200);
}

#[test]
fn connections_over_the_cap_get_503_and_the_rest_keep_working() {
    let sc = Sidecar::start_with(|s| {
        s.set("--max-connections", "2")
            .set("--header-timeout-ms", "2000");
    });
    let hold: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(sc.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let out = sc.raw(
        b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(3),
    );
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("too_many_connections"), "{out}");
    drop(hold);
    assert!(crate::util::wait_until(Duration::from_secs(5), || sc
        .get("/health")
        .status
        == 200));
}
