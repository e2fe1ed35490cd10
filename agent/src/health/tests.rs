//! Tests of the health checks: commands, timeouts, retries, HTTP, and the systemd
//! kinds skipped without systemd.

use super::*;
use std::io::{Read, Write};
use std::net::TcpListener;

fn cmd(argv: &[&str], secs: u64) -> Check {
    Check {
        kind: CheckKind::Command(argv.iter().map(|s| s.to_string()).collect()),
        timeout: Duration::from_secs(secs),
        grace: None,
    }
}

/// Serves `codes` in order, one per connection, then stops.
fn http_server(codes: Vec<u16>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for code in codes {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    format!("http://{addr}/healthz")
}

#[tokio::test]
async fn commands_pass_and_fail_with_the_reason() {
    run_all(
        &[cmd(&["/bin/true"], 2)],
        &ChildEnv::default(),
        Path::new("/nonexistent"),
    )
    .await
    .unwrap();
    let e = run_all(
        &[cmd(&["/bin/sh", "-c", "echo broken >&2; exit 3"], 1)],
        &ChildEnv::default(),
        Path::new("/nonexistent"),
    )
    .await
    .unwrap_err();
    assert!(e.why.contains("broken") && e.why.contains('3'), "{e}");
    assert!(e.to_string().contains("/bin/sh"), "{e}");
    let e = run_all(
        &[cmd(&["/no/such/program"], 1)],
        &ChildEnv::default(),
        Path::new("/nonexistent"),
    )
    .await
    .unwrap_err();
    assert!(e.why.contains("cannot start"), "{e}");
}

#[tokio::test]
async fn a_hanging_check_is_cut_at_its_timeout() {
    let t = Instant::now();
    let e = run_all(
        &[cmd(&["/bin/sleep", "30"], 1)],
        &ChildEnv::default(),
        Path::new("/nonexistent"),
    )
    .await
    .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(e.why.contains("still running"), "{e}");
}

#[tokio::test]
async fn a_check_is_retried_until_it_passes() {
    let d = tempfile::tempdir().unwrap();
    let flag = d.path().join("up");
    let script = format!(
        "if [ -e {f} ]; then exit 0; else touch {f}; exit 1; fi",
        f = flag.display()
    );
    run_all(
        &[cmd(&["/bin/sh", "-c", &script], 5)],
        &ChildEnv::default(),
        Path::new("/nonexistent"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn http_needs_2xx() {
    let ok = http_server(vec![200]);
    run_all(
        &[Check {
            kind: CheckKind::Http(ok),
            timeout: Duration::from_secs(2),
            grace: None,
        }],
        &ChildEnv::default(),
        Path::new("/nonexistent"),
    )
    .await
    .unwrap();
    let bad = http_server(vec![503, 503, 503, 503]);
    let e = run_all(
        &[Check {
            kind: CheckKind::Http(bad.clone()),
            timeout: Duration::from_millis(1500),
            grace: None,
        }],
        &ChildEnv::default(),
        Path::new("/nonexistent"),
    )
    .await
    .unwrap_err();
    assert!(e.why.contains("503") && e.check.contains(&bad), "{e}");
}

#[tokio::test]
async fn systemd_checks_are_skipped_without_systemd() {
    // A root without run/systemd/system: as in a container.
    let d = tempfile::tempdir().unwrap();
    run_all(
        &[
            Check {
                kind: CheckKind::SystemdUnit("no-such.service".into()),
                timeout: Duration::from_secs(1),
                grace: None,
            },
            Check {
                kind: CheckKind::SystemRunning,
                timeout: Duration::from_secs(1),
                grace: None,
            },
        ],
        &ChildEnv::default(),
        d.path(),
    )
    .await
    .unwrap();
}
