//! A long-lived S3 client across a server crash: the agent daemon keeps one
//! `fleet_core::Bucket` (one connection pool) for its whole life, so no request it
//! makes after SeaweedFS is killed with SIGKILL and restarted may hang on what the
//! old server left behind (pooled keep-alive connections to a dead process).
//!
//! Each iteration (`FLEET_FAULT_ITERATIONS`, default 2) kills the server once while
//! the client polls every 100 ms, as a daemon would, and once while it is idle with
//! connections in its pool; every request must end (answered or failed) well within
//! the client's request timeout, and the client must list again within a few
//! seconds of the restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_core::{Bucket, HostName, Key, KeyPrefix};
use fleet_tests::s3::{S3Server, ServerKind};

/// Far below the harness's request timeout (30 s): a request that took this long
/// waited on a dead connection rather than failing or being answered.
const REQUEST_BOUND: Duration = Duration::from_secs(10);
/// From the restart to the kept client's first good listing.
const RECOVERY_BOUND: Duration = Duration::from_secs(12);

fn iterations() -> usize {
    std::env::var("FLEET_FAULT_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

/// Lists until it succeeds (SeaweedFS answers 500 for a moment after a restart);
/// returns each attempt's duration and error.
async fn list_until_ok(bucket: &Bucket) -> Vec<(Duration, Option<String>)> {
    let t = Instant::now();
    let mut attempts = Vec::new();
    loop {
        let one = Instant::now();
        let r = bucket.list(&KeyPrefix::hosts()).await;
        attempts.push((one.elapsed(), r.as_ref().err().map(|e| e.to_string())));
        if r.is_ok() || t.elapsed() > Duration::from_secs(60) {
            return attempts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn a_client_kept_across_a_server_kill_recovers_without_waiting_out_its_timeout() {
    // One runtime for the whole run, as the daemon has (`agent/src/main.rs`).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = S3Server::start(ServerKind::SeaweedFs)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let name = server.new_bucket("restart-client").await.unwrap();
        let bucket = Arc::new(
            server
                .bucket(&name, "", &server.admin_credentials())
                .unwrap(),
        );
        let key = Key::manifest(&HostName::new("web-1").unwrap());
        bucket.put(&key, b"{}".to_vec()).await.unwrap();
        for i in 0..iterations() {
            // Killed while the client polls.
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let poller = tokio::spawn({
                let (bucket, stop) = (bucket.clone(), stop.clone());
                async move {
                    let mut longest = Duration::ZERO;
                    let (mut ok, mut failed) = (0, 0);
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let t = Instant::now();
                        match bucket.list(&KeyPrefix::hosts()).await {
                            Ok(_) => ok += 1,
                            Err(_) => failed += 1,
                        }
                        longest = longest.max(t.elapsed());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    (longest, ok, failed)
                }
            });
            tokio::time::sleep(Duration::from_millis(500)).await;
            server
                .kill_and_restart()
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
            let attempts = list_until_ok(&bucket).await;
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let (longest, ok, failed) = poller.await.unwrap();
            eprintln!(
                "iteration {i}, killed while polling: {ok} listings answered, {failed} failed, \
                 the longest took {longest:.1?}; after the restart: {attempts:?}"
            );
            assert!(
                longest < REQUEST_BOUND,
                "a poll across the kill took {longest:.1?}"
            );
            check_recovered(&attempts);

            // Killed while idle, with keep-alive connections in the pool.
            for _ in 0..3 {
                bucket.list(&KeyPrefix::hosts()).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            server
                .kill_and_restart()
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
            let attempts = list_until_ok(&bucket).await;
            eprintln!("iteration {i}, killed while idle; after the restart: {attempts:?}");
            check_recovered(&attempts);
        }
    });
}

fn check_recovered(attempts: &[(Duration, Option<String>)]) {
    assert!(
        attempts.last().is_some_and(|(_, e)| e.is_none()),
        "the kept client never recovered: {attempts:?}"
    );
    let total: Duration = attempts.iter().map(|(d, _)| *d).sum();
    assert!(
        attempts.iter().all(|(d, _)| *d < REQUEST_BOUND) && total < RECOVERY_BOUND,
        "the kept client waited on the dead server: {attempts:?}"
    );
}
