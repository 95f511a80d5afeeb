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

/// Like a client that writes its whole request before it reads anything (Python's
/// urllib, many scripts): headers and `body_len` bytes of body, then the answer. A reset
/// or broken pipe on the way is an error.
fn write_all_then_read(
    addr: std::net::SocketAddr,
    head: &str,
    body_len: usize,
    chunked: bool,
) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(head.as_bytes())?;
    let block = vec![b'x'; 64 * 1024];
    let mut left = body_len;
    while left > 0 {
        let n = left.min(block.len());
        if chunked {
            s.write_all(format!("{n:x}\r\n").as_bytes())?;
            s.write_all(&block[..n])?;
            s.write_all(b"\r\n")?;
        } else {
            s.write_all(&block[..n])?;
        }
        left -= n;
    }
    if chunked {
        s.write_all(b"0\r\n\r\n")?;
    }
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

const CAP: usize = 1024 * 1024;
const BIG: usize = 4 * CAP;

fn assert_answered(
    sc: &Sidecar,
    head: String,
    body_len: usize,
    chunked: bool,
    status: &str,
    code: &str,
) {
    let out = write_all_then_read(sc.addr, &head, body_len, chunked)
        .unwrap_or_else(|e| panic!("{head:?}: the client got {e} instead of the answer"));
    assert!(
        out.starts_with(&format!("HTTP/1.1 {status}")),
        "{head:?}: {out}"
    );
    assert!(
        out.contains(&format!("\"error\": \"{code}\"")),
        "{head:?}: {out}"
    );
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
}

#[test]
fn an_oversized_body_written_in_full_before_reading_still_gets_its_413() {
    let sc = Sidecar::start_with(|s| {
        s.set("--max-body-bytes", &CAP.to_string());
    });
    for path in ["/admin/backup", "/admin/backup/prune", "/admin/restore"] {
        let head = format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {BIG}\r\n\r\n");
        assert_answered(&sc, head, BIG, false, "413", "body_too_large");
    }
    // No content-length: refused once the cap is passed while reading.
    let head = "POST /admin/backup HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
    assert_answered(&sc, head.into(), BIG, true, "413", "body_too_large");
    assert!(stamps(&sc.paths).is_empty());
    assert_eq!(sc.get("/health").status, 200);
}

#[test]
fn an_early_refused_request_with_a_large_body_still_gets_its_answer() {
    let sc = Sidecar::start_with(|s| {
        s.set("--max-body-bytes", &CAP.to_string())
            .set("--token", crate::util::TOKEN);
    });
    let auth = format!("authorization: Bearer {}\r\n", crate::util::TOKEN);
    let cases = [
        // Wrong token: refused before the body is read.
        (
            "POST /admin/backup",
            "authorization: Bearer wrong-token-0123456789abcdef\r\n".to_string(),
            "401",
            "unauthorized",
        ),
        ("POST /admin/backup", String::new(), "401", "unauthorized"),
        // Not a stamp: refused from the path alone.
        (
            "GET /admin/backup/nope/validate",
            auth.clone(),
            "400",
            "bad_stamp",
        ),
        // Wrong method, unknown path.
        (
            "PUT /admin/backup",
            auth.clone(),
            "405",
            "method_not_allowed",
        ),
        ("POST /admin/nothing-here", auth.clone(), "404", "not_found"),
    ];
    for (line, headers, status, code) in cases {
        for (len, chunked) in [(BIG / 2, false), (BIG, false), (BIG, true)] {
            let framing = if chunked {
                "transfer-encoding: chunked\r\n".to_string()
            } else {
                format!("content-length: {len}\r\n")
            };
            let head = format!("{line} HTTP/1.1\r\nhost: x\r\n{headers}{framing}\r\n");
            assert_answered(&sc, head, len, chunked, status, code);
        }
    }
    assert!(stamps(&sc.paths).is_empty());
    assert_eq!(sc.get("/health").status, 200);
}

#[test]
fn draining_an_unread_body_is_bounded_in_time_and_size() {
    let sc = Sidecar::start_with(|s| {
        s.set("--max-body-bytes", &CAP.to_string());
    });
    // Time: the body stalls after a few bytes; the answer comes at once and the
    // connection is closed within the drain time (5 s), not held open.
    let started = Instant::now();
    let mut s = TcpStream::connect(sc.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(
        format!("POST /admin/backup HTTP/1.1\r\nhost: x\r\ncontent-length: {BIG}\r\n\r\nxxxx")
            .as_bytes(),
    )
    .unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 413");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let held = started.elapsed();
    assert!(
        held >= Duration::from_secs(4) && held < Duration::from_secs(9),
        "connection held {held:?}"
    );

    // Size: a body that never ends is read for 16 MiB at most, then the connection is
    // closed: the client's writes fail well before 96 MiB.
    let mut s = TcpStream::connect(sc.addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"POST /admin/backup HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        .unwrap();
    let block = vec![b'x'; 64 * 1024];
    let mut written = 0usize;
    let failed = loop {
        let r = s
            .write_all(format!("{:x}\r\n", block.len()).as_bytes())
            .and_then(|()| s.write_all(&block))
            .and_then(|()| s.write_all(b"\r\n"));
        if r.is_err() {
            break true;
        }
        written += block.len();
        if written >= 96 * 1024 * 1024 {
            break false;
        }
    };
    assert!(
        failed,
        "the sidecar read {written} bytes of an unwanted body"
    );
    assert!(written >= 16 * 1024 * 1024, "closed after {written} bytes");
    assert_eq!(sc.get("/health").status, 200);
}

#[test]
fn python_urllib_gets_the_413_of_an_oversized_body() {
    let python = ["python3", "python"].into_iter().find(|p| {
        std::process::Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(python) = python else {
        eprintln!("skipped: no python3 on this machine");
        return;
    };
    let sc = Sidecar::start_with(|s| {
        s.set("--max-body-bytes", &CAP.to_string());
    });
    let script = r#"
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1], data=b"x" * int(sys.argv[2]), method="POST",
                             headers={"Content-Type": "application/json"})
try:
    urllib.request.urlopen(req, timeout=20)
    print("no error")
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script, &sc.url("/admin/backup"), &BIG.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("413 "), "{stdout}\n{stderr}");
    assert!(stdout.contains("\"error\": \"body_too_large\""), "{stdout}");
}
