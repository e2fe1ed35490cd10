//! A link-shaping TCP proxy: puts a network link with a round-trip time and a
//! bandwidth cap between a client and a server on loopback, to measure clients
//! (`nix copy --from http://…`, the agent's fetch) as they would behave over a WAN or
//! a LAN rather than over loopback's zero latency and unbounded bandwidth.
//!
//! ```no_run
//! # fn t(server_endpoint: &str) -> std::io::Result<()> {
//! use fleet_tests::shaped_proxy::{Link, ShapedProxy};
//!
//! let proxy = ShapedProxy::start(server_endpoint.trim_start_matches("http://"), Link::WAN)?;
//! let url = format!("http://127.0.0.1:{}/bucket/cache", proxy.port());
//! // … run the client against `url`: every request pays 20 ms, the link carries
//! // 100 Mbit/s in each direction, shared by all connections …
//! # Ok(()) }
//! ```
//!
//! # Model
//!
//! - **Latency per segment.** Each direction of each connection is two threads: a
//!   reader that takes what arrived (at most [`CHUNK`] bytes at a time), waits for
//!   the link's bandwidth, and stamps it "deliver at now + RTT/2"; and a writer that
//!   delivers each chunk at its time. So every request and every response pays half
//!   the RTT one way, a request/response exchange pays the whole RTT, and a stream
//!   keeps flowing at the link's rate (chunks in flight overlap, as packets do).
//! - **Connection set-up** pays one RTT (the TCP handshake) before the first byte is
//!   forwarded: the proxy accepts at once, and connects upstream one RTT later.
//! - **Bandwidth** is a token bucket per direction, shared by every connection of
//!   the proxy, so parallel connections share the link instead of multiplying it (as
//!   on a real access link). It is full duplex: uploads do not slow downloads. The
//!   bucket holds at most [`Link::burst`] bytes, so an idle link does not bank a
//!   large burst; a sleep that overshoots is made up by the next chunk, so the
//!   long-run rate stays exact.
//! - **In flight** per direction of a connection: at most [`QUEUE_CHUNKS`] chunks
//!   (a few MiB), more than the bandwidth-delay product of the links modelled
//!   ([`Link::WAN`]: 250 KB; [`Link::LAN`]: 125 KB), so the queue never caps
//!   throughput below the link's rate, while a receiver that stops reading still
//!   holds the sender back.
//!
//! Not modelled: packet loss, TCP slow start and congestion control (a connection
//! gets the link's full rate from its first byte, which flatters clients that open
//! many short connections), jitter.
//!
//! [`ShapedProxy::peak_connections`] tells how many client connections were open at
//! once at most: an HTTP/1.1 client opens a connection per request in flight, so it
//! shows how many requests a client kept in flight.
//!
//! The proxy forwards bytes only (any protocol): SigV4 signatures of the `Host`
//! header the client sent still verify, as with [`crate::proxy`]. Its threads live
//! as long as the process (a benchmark or test process).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most bytes read and forwarded as one segment.
pub const CHUNK: usize = 16 * 1024;
/// Segments in flight per direction of a connection (256 × 16 KiB = 4 MiB).
pub const QUEUE_CHUNKS: usize = 256;

/// A network link: round-trip time and bandwidth per direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// Round-trip time; each direction delays by half of it.
    pub rtt: Duration,
    /// Bandwidth of each direction, in bits per second.
    pub bits_per_sec: u64,
}

impl Link {
    /// A WAN link: 20 ms round trip, 100 Mbit/s.
    pub const WAN: Link = Link {
        rtt: Duration::from_millis(20),
        bits_per_sec: 100_000_000,
    };
    /// A LAN: 1 ms round trip, 1 Gbit/s.
    pub const LAN: Link = Link {
        rtt: Duration::from_millis(1),
        bits_per_sec: 1_000_000_000,
    };

    /// Bytes per second of each direction.
    pub fn bytes_per_sec(&self) -> f64 {
        self.bits_per_sec as f64 / 8.0
    }

    /// Largest burst the token bucket allows after an idle spell: one millisecond of
    /// the link's rate, and at least one [`CHUNK`] so a chunk never waits for more
    /// tokens than the bucket can hold.
    pub fn burst(&self) -> f64 {
        (self.bytes_per_sec() / 1000.0).max(CHUNK as f64)
    }

    /// A short description, e.g. `20 ms RTT, 100 Mbit/s`.
    pub fn describe(&self) -> String {
        let ms = self.rtt.as_secs_f64() * 1000.0;
        let mbit = self.bits_per_sec as f64 / 1e6;
        if mbit >= 1000.0 {
            format!("{ms} ms RTT, {} Gbit/s", mbit / 1000.0)
        } else {
            format!("{ms} ms RTT, {mbit} Mbit/s")
        }
    }
}

/// A token bucket shared by all connections of one direction of a link.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(link: &Link) -> Self {
        Self {
            rate: link.bytes_per_sec(),
            burst: link.burst(),
            state: Mutex::new((link.burst(), Instant::now())),
        }
    }

    /// Takes `n` bytes' worth of tokens, sleeping until the link has carried them.
    /// Tokens may go negative (a debt the caller sleeps off), which serialises the
    /// callers: each one's wait includes everything taken before it.
    fn take(&self, n: usize) {
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let (tokens, last) = *s;
            let refilled =
                (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
            let left = refilled - n as f64;
            *s = (left, now);
            if left < 0.0 { -left / self.rate } else { 0.0 }
        };
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
    }
}

/// Open and most-ever-open client connections of a proxy.
#[derive(Debug, Default)]
struct Connections {
    open: AtomicUsize,
    peak: AtomicUsize,
}

/// Held by each thread of one connection; the last one dropped closes it.
struct OpenConnection(Arc<Connections>);

impl OpenConnection {
    fn new(c: Arc<Connections>) -> Self {
        let now = c.open.fetch_add(1, Ordering::SeqCst) + 1;
        c.peak.fetch_max(now, Ordering::SeqCst);
        Self(c)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running link-shaping proxy (see the module docs).
#[derive(Debug)]
pub struct ShapedProxy {
    port: u16,
    link: Link,
    connections: Arc<Connections>,
}

impl ShapedProxy {
    /// Starts a proxy on a free loopback port in front of `upstream` (`host:port`),
    /// shaping every connection through it as `link`.
    pub fn start(upstream: &str, link: Link) -> std::io::Result<ShapedProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let upstream = upstream.to_owned();
        let up = Arc::new(Bucket::new(&link));
        let down = Arc::new(Bucket::new(&link));
        let connections = Arc::new(Connections::default());
        let counters = connections.clone();
        std::thread::Builder::new()
            .name(format!("shaped-proxy-{port}"))
            .spawn(move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { return };
                    let open = Arc::new(OpenConnection::new(counters.clone()));
                    let (upstream, up, down) = (upstream.clone(), up.clone(), down.clone());
                    std::thread::spawn(move || connect(client, &upstream, link, up, down, open));
                }
            })?;
        Ok(ShapedProxy {
            port,
            link,
            connections,
        })
    }

    /// Most client connections open at once so far.
    pub fn peak_connections(&self) -> usize {
        self.connections.peak.load(Ordering::SeqCst)
    }

    /// Client connections open now (closed ones count until both directions ended).
    pub fn open_connections(&self) -> usize {
        self.connections.open.load(Ordering::SeqCst)
    }

    /// The loopback port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The link it models.
    pub fn link(&self) -> Link {
        self.link
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// One connection: the handshake's round trip, then both directions shaped.
fn connect(
    client: TcpStream,
    upstream: &str,
    link: Link,
    up: Arc<Bucket>,
    down: Arc<Bucket>,
    open: Arc<OpenConnection>,
) {
    std::thread::sleep(link.rtt);
    // An unreachable upstream shows to the client as a closed connection.
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    // Small segments must not wait for Nagle's algorithm: the delay is the model's.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let one_way = link.rtt / 2;
    pipe(client, s2, one_way, up, open.clone());
    pipe(server, c2, one_way, down, open);
}

/// A segment on its way, or the end of the stream (`None`: the sender half-closed,
/// or failed when `Some(Err)`).
type Segment = (Instant, Option<Result<Vec<u8>, ()>>);

/// Forwards `from` to `to` through `bucket`, each segment delivered `delay` after it
/// was sent.
fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    delay: Duration,
    bucket: Arc<Bucket>,
    open: Arc<OpenConnection>,
) {
    let (tx, rx): (SyncSender<Segment>, Receiver<Segment>) = sync_channel(QUEUE_CHUNKS);
    let reader_open = open.clone();
    std::thread::spawn(move || {
        let _open = reader_open;
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.send((Instant::now() + delay, None));
                    return;
                }
                Ok(n) => {
                    bucket.take(n);
                    if tx
                        .send((Instant::now() + delay, Some(Ok(buf[..n].to_vec()))))
                        .is_err()
                    {
                        // The writer gave up: the other end is gone.
                        let _ = from.shutdown(Shutdown::Both);
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let _ = tx.send((Instant::now() + delay, Some(Err(()))));
                    return;
                }
            }
        }
    });
    std::thread::spawn(move || {
        let _open = open;
        for (at, segment) in rx {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            match segment {
                Some(Ok(bytes)) => {
                    if to.write_all(&bytes).is_err() {
                        let _ = to.shutdown(Shutdown::Both);
                        return;
                    }
                }
                // A clean half-close is passed on: the other side may still answer.
                None => {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
                Some(Err(())) => {
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers each line it reads with the same line (an echo per
    /// request), on as many connections as come.
    fn echo_server() -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let mut s = s.unwrap();
                s.set_nodelay(true).unwrap();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    /// An upstream that sends `n` bytes to every connection, then closes it.
    fn source_server(n: usize) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let mut s = s.unwrap();
                std::thread::spawn(move || {
                    let _ = s.write_all(&vec![7u8; n]);
                });
            }
        });
        addr
    }

    fn read_all(port: u16) -> usize {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert!(got.iter().all(|b| *b == 7), "bytes changed on the way");
        got.len()
    }

    const MB: usize = 1_000_000;

    #[test]
    fn a_megabyte_at_8_mbit_takes_about_a_second() {
        let link = Link {
            rtt: Duration::from_millis(2),
            bits_per_sec: 8_000_000,
        };
        let proxy = ShapedProxy::start(&source_server(MB), link).unwrap();
        let start = Instant::now();
        assert_eq!(read_all(proxy.port()), MB);
        let t = start.elapsed().as_secs_f64();
        // 1 MB at 1 MB/s, less the initial burst (16 KiB), plus two round trips.
        assert!((0.95..1.3).contains(&t), "took {t:.3} s");
    }

    #[test]
    fn parallel_connections_share_the_bandwidth() {
        let link = Link {
            rtt: Duration::from_millis(2),
            bits_per_sec: 8_000_000,
        };
        let proxy = ShapedProxy::start(&source_server(MB / 2), link).unwrap();
        let port = proxy.port();
        let start = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(move || read_all(port)))
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), MB / 2);
        }
        assert_eq!(proxy.peak_connections(), 4);
        let t = start.elapsed().as_secs_f64();
        // 4 × 0.5 MB through one 1 MB/s link: 2 s, not the 0.5 s of four links.
        assert!((1.9..2.5).contains(&t), "took {t:.3} s");
    }

    #[test]
    fn every_request_pays_the_round_trip() {
        let link = Link {
            rtt: Duration::from_millis(60),
            bits_per_sec: 1_000_000_000,
        };
        let proxy = ShapedProxy::start(&echo_server(), link).unwrap();
        let start = Instant::now();
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        c.set_nodelay(true).unwrap();
        let mut times = Vec::new();
        for i in 0..3u8 {
            let t = Instant::now();
            c.write_all(&[b'a' + i, b'\n']).unwrap();
            let mut reply = [0u8; 2];
            c.read_exact(&mut reply).unwrap();
            assert_eq!(reply, [b'a' + i, b'\n']);
            times.push(t.elapsed());
        }
        // The first exchange also pays the handshake's round trip.
        assert!(times[0] >= Duration::from_millis(120), "{times:?}");
        for t in &times[1..] {
            assert!(*t >= Duration::from_millis(60), "{times:?}");
            assert!(*t < Duration::from_millis(110), "{times:?}");
        }
        assert!(start.elapsed() >= Duration::from_millis(240));
    }

    #[test]
    fn the_half_close_is_passed_on() {
        // A client that sends, half-closes and then reads still gets its answer.
        let proxy = ShapedProxy::start(&echo_server(), Link::LAN).unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        c.write_all(b"hello").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hello");
        assert_eq!(proxy.peak_connections(), 1);
        // Both directions ended: the connection is no longer counted as open.
        let deadline = Instant::now() + Duration::from_secs(5);
        while proxy.open_connections() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(proxy.open_connections(), 0);
    }

    #[test]
    fn links_describe_themselves() {
        assert_eq!(Link::WAN.describe(), "20 ms RTT, 100 Mbit/s");
        assert_eq!(Link::LAN.describe(), "1 ms RTT, 1 Gbit/s");
        assert!(Link::LAN.burst() >= CHUNK as f64);
    }
}
