//! A seeded fault-injecting HTTP/1.1 proxy, to put a flaky S3 endpoint between the
//! fleet binaries and a real server (SeaweedFS).
//!
//! Each request the client sends is read whole (request line, headers,
//! `Content-Length` body, as [`crate::proxy`] reads them), given a [`Fault`] drawn
//! from a small seeded PRNG, and then answered according to it:
//!
//! | fault | what the client sees | reached the server? |
//! |---|---|---|
//! | [`Fault::Pass`] | the server's response | yes |
//! | [`Fault::SlowDown`] | `503 SlowDown` (S3's throttle answer), part of a burst | no |
//! | [`Fault::InternalError`] | `500 InternalError` | no |
//! | [`Fault::ResetBeforeSend`] | a TCP reset, no response | no |
//! | [`Fault::Stall`] | the server's response after a pause | yes |
//! | [`Fault::Drip`] | the response a few bytes at a time | yes |
//! | [`Fault::Truncate`] | the head and part of the body, then a clean close | yes |
//! | [`Fault::ResetMidBody`] | the head and part of the body, then a reset | yes |
//! | [`Fault::DropAfterApply`] | a reset after the server applied the write | yes |
//!
//! `DropAfterApply` is drawn only for writes (PUT, POST, DELETE): the client then
//! retries a write that already happened. The proxy speaks one request per
//! connection: it asks the server with `Connection: close`, reads its response to the
//! end, and closes the client's connection after answering (saying `Connection:
//! close`), which HTTP clients handle by opening a new one. The `Host` header and
//! every signed header pass unchanged, so SigV4 signatures still verify.
//!
//! Determinism: the n-th request to arrive gets the n-th draw of the PRNG seeded with
//! [`FaultPlan::seed`], so a sequential client (one `fleet-agent once`) meets the
//! same schedule on a replay. Concurrent clients share one sequence, so which client
//! gets which draw depends on arrival order; the seed still replays the schedule.
//!
//! [`FaultProxy::calm`] turns the faults off (everything passes), for checking that a
//! client recovers once the faults stop; [`FaultProxy::stats`] counts what was
//! injected. [`FaultProxy::cut_while_exists`] names a file: while it exists every
//! request is reset before it is forwarded, as if the network were down, so a
//! process the test does not control (a system's activation script) can cut the
//! link by creating the file and restore it by removing it.

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::proxy::{connection_close, read_request};
use crate::rng::Rng;

/// What the proxy does to one request (see the module docs' table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// Forward unchanged.
    Pass,
    /// Answer `503 SlowDown` without forwarding.
    SlowDown,
    /// Answer `500 InternalError` without forwarding.
    InternalError,
    /// Reset the connection without forwarding.
    ResetBeforeSend,
    /// Forward, then hold the response back for a while.
    Stall,
    /// Forward, then send the response in small pieces with pauses.
    Drip,
    /// Forward, then send part of the body and close cleanly.
    Truncate,
    /// Forward, then send part of the body and reset.
    ResetMidBody,
    /// Forward a write, then reset without answering.
    DropAfterApply,
}

/// How often each fault is drawn, in percent of requests (the rest pass).
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// Seeds the schedule.
    pub seed: u64,
    /// Percent of requests that start a burst of 503s.
    pub slow_down: u64,
    /// Longest burst of consecutive 503s.
    pub max_burst: u64,
    /// Percent answered 500.
    pub internal_error: u64,
    /// Percent reset before forwarding.
    pub reset_before_send: u64,
    /// Percent stalled.
    pub stall: u64,
    /// Longest stall.
    pub max_stall: Duration,
    /// Percent drip-fed.
    pub drip: u64,
    /// Percent truncated.
    pub truncate: u64,
    /// Percent reset mid-body.
    pub reset_mid_body: u64,
    /// Percent of writes applied and then dropped.
    pub drop_after_apply: u64,
}

impl FaultPlan {
    /// A plan that injects nothing, to start from: `FaultPlan { stall: 50,
    /// ..FaultPlan::none(seed) }`.
    pub fn none(seed: u64) -> Self {
        Self {
            seed,
            slow_down: 0,
            max_burst: 1,
            internal_error: 0,
            reset_before_send: 0,
            stall: 0,
            max_stall: Duration::from_millis(1),
            drip: 0,
            truncate: 0,
            reset_mid_body: 0,
            drop_after_apply: 0,
        }
    }

    /// A plan with every fault at a moderate rate (about a third of requests
    /// faulted), seeded with `seed`.
    pub fn mixed(seed: u64) -> Self {
        Self {
            seed,
            slow_down: 4,
            max_burst: 3,
            internal_error: 3,
            reset_before_send: 3,
            stall: 4,
            max_stall: Duration::from_millis(700),
            drip: 4,
            truncate: 3,
            reset_mid_body: 3,
            drop_after_apply: 8,
        }
    }
}

/// Counts of the faults injected, by kind.
pub type FaultStats = std::collections::BTreeMap<Fault, u64>;

#[derive(Debug)]
struct Schedule {
    plan: FaultPlan,
    rng: Rng,
    burst_left: u64,
    stats: FaultStats,
}

impl Schedule {
    fn draw(&mut self, method: &str) -> Fault {
        let fault = self.pick(method);
        *self.stats.entry(fault).or_default() += 1;
        fault
    }

    fn pick(&mut self, method: &str) -> Fault {
        if self.burst_left > 0 {
            self.burst_left -= 1;
            return Fault::SlowDown;
        }
        let p = &self.plan;
        let write = matches!(method, "PUT" | "POST" | "DELETE");
        let mut roll = self.rng.below(100);
        let table = [
            (p.slow_down, Fault::SlowDown),
            (p.internal_error, Fault::InternalError),
            (p.reset_before_send, Fault::ResetBeforeSend),
            (p.stall, Fault::Stall),
            (p.drip, Fault::Drip),
            (p.truncate, Fault::Truncate),
            (p.reset_mid_body, Fault::ResetMidBody),
            (
                if write { p.drop_after_apply } else { 0 },
                Fault::DropAfterApply,
            ),
        ];
        for (percent, fault) in table {
            if roll < percent {
                if fault == Fault::SlowDown {
                    self.burst_left = self.rng.below(self.plan.max_burst.max(1));
                }
                return fault;
            }
            roll -= percent;
        }
        Fault::Pass
    }
}

/// A running fault-injecting proxy (see the module docs). Clones share it.
#[derive(Clone, Debug)]
pub struct FaultProxy {
    port: u16,
    schedule: Arc<Mutex<Schedule>>,
    calm: Arc<AtomicBool>,
    cut_file: Arc<Mutex<Option<PathBuf>>>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port in front of `upstream` (`host:port`),
    /// injecting faults by `plan`. Its threads live as long as the process.
    pub fn start(upstream: &str, plan: FaultPlan) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let proxy = Self {
            port: listener.local_addr()?.port(),
            schedule: Arc::new(Mutex::new(Schedule {
                rng: Rng::new(plan.seed),
                plan,
                burst_left: 0,
                stats: FaultStats::new(),
            })),
            calm: Arc::new(AtomicBool::new(false)),
            cut_file: Arc::new(Mutex::new(None)),
        };
        let upstream = upstream.to_owned();
        let p = proxy.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let (p, upstream) = (p.clone(), upstream.clone());
                std::thread::spawn(move || p.serve(client, &upstream));
            }
        });
        Ok(proxy)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Turns faults off (`true`: every request passes) or back on.
    pub fn calm(&self, calm: bool) {
        self.calm.store(calm, Ordering::SeqCst);
    }

    /// Resets every request while `file` exists (see the module docs).
    pub fn cut_while_exists(&self, file: PathBuf) {
        *self.cut_file.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
    }

    fn is_cut(&self) -> bool {
        let file = self.cut_file.lock().unwrap_or_else(|e| e.into_inner());
        file.as_ref().is_some_and(|f| f.exists())
    }

    /// Starts a new schedule from `plan` (a new seed, say), keeping the counts.
    pub fn replan(&self, plan: FaultPlan) {
        let mut s = self.lock();
        s.rng = Rng::new(plan.seed);
        s.plan = plan;
        s.burst_left = 0;
    }

    /// The faults injected so far (passes included), by kind.
    pub fn stats(&self) -> FaultStats {
        self.lock().stats.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers one request on `client`, then closes it.
    fn serve(&self, client: TcpStream, upstream: &str) {
        let Ok(read_half) = client.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(read_half);
        let Ok(Some(request)) = read_request(&mut reader) else {
            let _ = client.shutdown(Shutdown::Both);
            return;
        };
        if self.is_cut() {
            return reset(client);
        }
        let method = request.method.clone();
        let (fault, delay) = if self.calm.load(Ordering::SeqCst) {
            (Fault::Pass, Duration::ZERO)
        } else {
            let mut s = self.lock();
            let fault = s.draw(&method);
            let max = s.plan.max_stall.as_millis().max(1) as u64;
            (fault, Duration::from_millis(s.rng.below(max)))
        };
        let mut client = client;
        match fault {
            Fault::SlowDown => {
                return answer_error(&mut client, 503, "Service Unavailable", "SlowDown");
            }
            Fault::InternalError => {
                return answer_error(&mut client, 500, "Internal Server Error", "InternalError");
            }
            Fault::ResetBeforeSend => return reset(client),
            _ => {}
        }
        let Ok(response) = forward(upstream, &request.with_connection_close()) else {
            // The server is down (restarting, say): the client sees a closed
            // connection, as it would in front of a dead server.
            return reset(client);
        };
        let response = close_after(&response);
        let (head_len, body_len) = head_and_body(&response);
        let cut = head_len + body_len / 2;
        match fault {
            Fault::Stall => {
                std::thread::sleep(delay);
                let _ = client.write_all(&response);
            }
            Fault::Drip => {
                for piece in response.chunks(response.len().div_ceil(8).max(1)) {
                    if client
                        .write_all(piece)
                        .and_then(|()| client.flush())
                        .is_err()
                    {
                        break;
                    }
                    std::thread::sleep(delay / 8);
                }
            }
            // A body of nothing cannot be cut short; the head is cut instead.
            Fault::Truncate => {
                let _ = client.write_all(&response[..cut.min(response.len() - 1)]);
            }
            Fault::ResetMidBody => {
                let _ = client.write_all(&response[..cut.min(response.len() - 1)]);
                return reset(client);
            }
            Fault::DropAfterApply => return reset(client),
            _ => {
                let _ = client.write_all(&response);
            }
        }
        let _ = client.shutdown(Shutdown::Both);
    }
}

/// Sends `request` on a new connection to `upstream` and reads the whole response
/// (the request asked the server to close after it).
fn forward(upstream: &str, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut server = TcpStream::connect(upstream)?;
    server.set_read_timeout(Some(Duration::from_secs(60)))?;
    server.write_all(request)?;
    let mut response = Vec::new();
    server.read_to_end(&mut response)?;
    if response.is_empty() {
        return Err(std::io::Error::other("the server closed without answering"));
    }
    Ok(response)
}

/// Where the head ends and how long the body is, in `response`.
fn head_and_body(response: &[u8]) -> (usize, usize) {
    let head = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |p| p + 4);
    (head, response.len() - head)
}

/// `response` with its `Connection` header replaced by `Connection: close`.
fn close_after(response: &[u8]) -> Vec<u8> {
    let (head_len, _) = head_and_body(response);
    connection_close(&response[..head_len], &response[head_len..])
}

/// Answers an S3 error document and closes.
fn answer_error(client: &mut TcpStream, status: u16, reason: &str, code: &str) {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>injected by the fault proxy</Message></Error>"
    );
    let _ = write!(
        client,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.shutdown(Shutdown::Both);
}

/// Closes `stream` with a TCP reset (SO_LINGER 0) rather than a clean FIN.
fn reset(stream: TcpStream) {
    let _ = rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO));
    drop(stream);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_a_function_of_the_seed() {
        let draws = |seed| {
            let mut s = Schedule {
                plan: FaultPlan::mixed(seed),
                rng: Rng::new(seed),
                burst_left: 0,
                stats: FaultStats::new(),
            };
            (0..500)
                .map(|i| s.draw(if i % 3 == 0 { "PUT" } else { "GET" }))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let all = draws(7);
        for f in [
            Fault::Pass,
            Fault::SlowDown,
            Fault::DropAfterApply,
            Fault::Drip,
        ] {
            assert!(all.contains(&f), "{f:?} never drawn in 500");
        }
        // Only writes are applied and dropped.
        for (i, f) in all.iter().enumerate() {
            assert!(*f != Fault::DropAfterApply || i % 3 == 0);
        }
    }

    #[test]
    fn rewrites_the_connection_header() {
        let r = close_after(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nA: b\r\n\r\nbody");
        assert_eq!(
            r,
            b"HTTP/1.1 200 OK\r\nA: b\r\nConnection: close\r\n\r\nbody"
        );
    }

    #[test]
    fn calm_passes_and_faults_are_counted() {
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = upstream.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in upstream.incoming() {
                let mut s = s.unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let req = read_request(&mut r).unwrap().unwrap();
                assert!(
                    String::from_utf8_lossy(&req.with_connection_close())
                        .contains("Connection: close")
                );
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .unwrap();
            }
        });
        let proxy = FaultProxy::start(&addr, FaultPlan::mixed(1)).unwrap();
        proxy.calm(true);
        let get = || {
            let mut c = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
            c.write_all(b"GET /b/k HTTP/1.1\r\nHost: h\r\n\r\n")
                .unwrap();
            let mut out = Vec::new();
            let _ = c.read_to_end(&mut out);
            out
        };
        for _ in 0..5 {
            assert!(get().ends_with(b"\r\n\r\nok"));
        }
        assert!(proxy.stats().is_empty());
        proxy.calm(false);
        proxy.replan(FaultPlan {
            internal_error: 100,
            ..FaultPlan::none(2)
        });
        let out = String::from_utf8(get()).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 500") && out.contains("InternalError"),
            "{out}"
        );
        assert_eq!(proxy.stats()[&Fault::InternalError], 1);
    }
}
