//! A counting HTTP/1.1 proxy, to count the requests a client (the agent) makes to an
//! S3 server by what goes over the wire, not by the client's own word.
//!
//! The proxy parses each request the client sends (request line, headers,
//! `Content-Length` body), records its method and path, and forwards the bytes
//! unchanged both ways. It rewrites nothing: SigV4 signs the `Host` header the client
//! sent (the proxy's address), and the server checks the signature against that same
//! header, so signed requests pass through.
//!
//! ```no_run
//! # fn t(server_endpoint: &str) -> std::io::Result<()> {
//! use fleet_tests::proxy::{Requests, counting_proxy};
//!
//! let requests = Requests::default();
//! let port = counting_proxy(server_endpoint.trim_start_matches("http://"), requests.clone())?;
//! let url = format!("s3://bucket?endpoint=http://127.0.0.1:{port}&region=us-east-1");
//! // … run the client against `url` …
//! let seen: Vec<String> = requests.take(); // ["GET /bucket/hosts/web-1/manifest.json", …]
//! # Ok(()) }
//! ```
//!
//! Limits: request bodies must carry `Content-Length` (a chunked request body is
//! refused: the connection is closed and the client sees an error, so a miscount
//! cannot pass silently); responses are not parsed, only copied. The proxy's threads
//! live as long as the process.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// The requests a [`counting_proxy`] has seen, in arrival order, as `METHOD /path`
/// (the query string dropped). Clones share one list.
#[derive(Clone, Debug, Default)]
pub struct Requests(Arc<Mutex<Vec<String>>>);

impl Requests {
    /// Removes and returns the requests seen so far.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lock())
    }

    /// A copy of the requests seen so far (the list is kept).
    pub fn snapshot(&self) -> Vec<String> {
        self.lock().clone()
    }

    /// How many requests were seen (and not taken) so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none was seen (or all were taken).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        // A panicking recorder thread must not hide the requests it recorded.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, request: String) {
        self.lock().push(request);
    }
}

/// Starts a counting proxy on a free loopback port in front of `upstream`
/// (`host:port`) and returns the port. Every request forwarded is recorded in `seen`
/// before it is forwarded, so by the time the client has its response the request is
/// in the list.
pub fn counting_proxy(upstream: &str, seen: Requests) -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let upstream = upstream.to_owned();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            // An unreachable upstream shows to the client as a closed connection.
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (Ok(mut c_read), Ok(mut s_write)) = (client.try_clone(), server.try_clone()) else {
                continue;
            };
            let (mut s_read, mut c_write) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_read, &mut c_write);
                let _ = c_write.shutdown(Shutdown::Both);
            });
            let seen = seen.clone();
            std::thread::spawn(move || {
                // A client that is done sending may still be waiting for responses:
                // pass its half-close on, and cut the connection only on an error.
                let how = match forward_requests(&mut c_read, &mut s_write, &seen) {
                    Ok(()) => Shutdown::Write,
                    Err(e) => {
                        if e.kind() == std::io::ErrorKind::InvalidData {
                            eprintln!("counting proxy: {e}");
                        }
                        Shutdown::Both
                    }
                };
                let _ = s_write.shutdown(how);
            });
        }
    });
    Ok(port)
}

/// Copies requests from `from` to `to`, recording each one.
fn forward_requests(
    from: &mut TcpStream,
    to: &mut TcpStream,
    seen: &Requests,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(from);
    while let Some(request) = read_request(&mut reader)? {
        seen.push(format!("{} {}", request.method, request.path));
        to.write_all(&request.head)?;
        to.write_all(&request.body)?;
    }
    Ok(())
}

/// One HTTP/1.1 request as read off the wire.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    /// The method (`GET`, `PUT`, …).
    pub(crate) method: String,
    /// The path, without the query string.
    pub(crate) path: String,
    /// The request line and headers, with the blank line that ends them, as sent.
    pub(crate) head: Vec<u8>,
    /// The `Content-Length` body.
    pub(crate) body: Vec<u8>,
}

impl Request {
    /// The request's bytes with its `Connection` header replaced by
    /// `Connection: close` (a hop-by-hop header, never signed).
    pub(crate) fn with_connection_close(&self) -> Vec<u8> {
        connection_close(&self.head, &self.body)
    }
}

/// A message (request or response) from its `head` (start line and headers, blank
/// line included) and `body`, with its `Connection` header replaced by
/// `Connection: close`.
pub(crate) fn connection_close(head: &[u8], body: &[u8]) -> Vec<u8> {
    let head = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Reads one request (head and `Content-Length` body) from `reader`; `None` when the
/// client closed before sending another. A chunked body is refused as
/// `InvalidData`.
pub(crate) fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidData, msg);
    let mut head = Vec::new();
    let mut request_line = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        head.extend_from_slice(line.as_bytes());
        if request_line.is_empty() {
            request_line = line.trim_end().to_owned();
            continue;
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v
                .trim()
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length: {}", line.trim_end())))?;
        }
        if lower.starts_with("transfer-encoding:") {
            return Err(invalid(format!(
                "chunked request bodies are not parsed, closing the connection: {}",
                line.trim_end()
            )));
        }
    }
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts
        .next()
        .unwrap_or("")
        .split('?')
        .next()
        .unwrap_or("")
        .to_owned();
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok(Some(Request {
        method,
        path,
        head,
        body,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn counts_pipelined_requests_and_forwards_them_unchanged() {
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = upstream.local_addr().unwrap().to_string();
        let received = std::thread::spawn(move || {
            let (mut s, _) = upstream.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(b"ok").unwrap();
            got
        });
        let seen = Requests::default();
        let port = counting_proxy(&addr, seen.clone()).unwrap();
        let sent = b"GET /b/k?x=1 HTTP/1.1\r\nHost: h\r\n\r\n\
                     PUT /b/s HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(sent).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        c.read_to_end(&mut reply).unwrap();
        assert_eq!(received.join().unwrap(), sent);
        assert_eq!(reply, b"ok");
        assert_eq!(seen.len(), 2);
        assert_eq!(seen.take(), ["GET /b/k", "PUT /b/s"]);
        assert!(seen.is_empty());
    }
}
