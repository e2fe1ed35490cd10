//! `fleet-reporter serve` as a network server, over raw TCP: a client that never
//! finishes its request headers, or trickles them a byte at a time, has its
//! connection closed after `--header-timeout`, a body announced and never sent is
//! answered 408 after the same time, and complete requests are answered.
//! (`axum::serve` installs no timer, so without serve's own accept loop such a
//! client would hold its connection forever.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve` on an empty `file://` bucket with a 1 s header timeout; returns
/// the server and its `host:port`.
fn serve(root: &std::path::Path) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleet-reporter"))
        .args(["serve", "--listen", "127.0.0.1:0", "--header-timeout", "1s"])
        .arg("--bucket")
        .arg(format!("file://{}", root.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fleet-reporter serve");
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("fleet-reporter listening on http://")
        .and_then(|a| a.strip_suffix('/'))
        .unwrap_or_else(|| panic!("unexpected first line from serve: {line:?}"))
        .to_owned();
    (server, addr)
}

/// Reads until the server closes the connection; fails if it has not within
/// `within`. Returns what was read.
fn read_until_closed(s: &mut TcpStream, within: Duration) -> String {
    s.set_read_timeout(Some(within)).unwrap();
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "the server kept the connection open for {within:?} ({e}); read so far: {:?}",
            String::from_utf8_lossy(&out)
        ),
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the first answer's status line, or until the server closes the connection;
/// fails if neither happens within `within`.
fn read_until_closed_or_answered(s: &mut TcpStream, within: Duration) -> String {
    s.set_read_timeout(Some(within)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "no answer and no close within {within:?} ({e}); read so far: {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn unfinished_or_trickled_headers_are_cut_off_and_requests_still_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = serve(dir.path());

    // Headers begun and never finished.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(b"GET /api/v1/summary HTTP/1.1\r\nHost: x\r\n")
        .unwrap();

    // Headers trickled a byte every 200 ms: each byte arrives in time, the whole does
    // not.
    let mut trickled = TcpStream::connect(&addr).unwrap();
    let started = Instant::now();
    let mut trickle_cut = false;
    for b in b"GET /api/v1/summary HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
        if trickled.write_all(&[*b]).is_err() {
            trickle_cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if started.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    if !trickle_cut {
        read_until_closed(&mut trickled, Duration::from_secs(10));
    }

    // The stalled client was cut off too (well within the time the trickle took).
    read_until_closed(&mut stalled, Duration::from_secs(10));

    // A body announced and never sent: answered 408, not waited on.
    let mut no_body = TcpStream::connect(&addr).unwrap();
    no_body
        .write_all(b"POST /api/v1/summary HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        .unwrap();
    let answer = read_until_closed_or_answered(&mut no_body, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A complete request on a new connection is answered.
    let mut ok = TcpStream::connect(&addr).unwrap();
    ok.write_all(b"GET /api/v1/summary HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let answer = read_until_closed(&mut ok, Duration::from_secs(30));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn a_zero_header_timeout_is_refused_with_its_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleet-reporter"))
        .args([
            "serve",
            "--bucket",
            "memory://",
            "--header-timeout",
            "0s",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("header-timeout"), "{err}");
}
