//! One HTTP/1.1 exchange of the fleet page: read a bounded request, route
//! it (the page's three assets and `/api/fleet`), answer, close.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::record::live::Live;

/// Largest request (line and headers) read; longer ones get 431.
pub const MAX_REQUEST: usize = 8 * 1024;

/// Time a client has to send its request head; slower ones get 408.
pub const HEAD_TIME: Duration = Duration::from_secs(5);

const PAGE_HTML: &str = include_str!("page.html");
const PAGE_JS: &str = include_str!("page.js");
const PAGE_CSS: &str = include_str!("page.css");

/// Only our own scripts, styles and data; no frames, forms or plugins.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self'; connect-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// Read one request from `stream`, answer it, close.
pub fn serve_one(mut stream: TcpStream, live: &Live) {
    let reply = match read_head(&mut stream) {
        Ok(head) => route(&head, live),
        Err(code) => status_only(code, reason(code)),
    };
    let _ = stream.write_all(&reply);
    let _ = stream.flush();
}

/// The request line and headers, or the status to refuse them with.
fn read_head(stream: &mut TcpStream) -> Result<String, u16> {
    let started = Instant::now();
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    loop {
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if len == buf.len() {
            return Err(431);
        }
        // A client trickling bytes would hold one of the few connections.
        if started.elapsed() > HEAD_TIME {
            return Err(408);
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return Err(400),
            Ok(n) => len += n,
        }
    }
    String::from_utf8(buf[..len].to_vec()).map_err(|_| 400)
}

/// The answer to a request head.
fn route(head: &str, live: &Live) -> Vec<u8> {
    let mut parts = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return status_only(405, reason(405));
    }
    if !host_allowed(head) {
        return status_only(421, reason(421));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (ctype, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", PAGE_HTML.as_bytes().to_vec()),
        "/page.js" => (
            "text/javascript; charset=utf-8",
            PAGE_JS.as_bytes().to_vec(),
        ),
        "/page.css" => ("text/css; charset=utf-8", PAGE_CSS.as_bytes().to_vec()),
        "/api/fleet" => ("application/json", live.to_json().to_string().into_bytes()),
        // `?device=ID`: one device's history, so /api/fleet stays small.
        "/api/history" => match query
            .strip_prefix("device=")
            .and_then(|id| live.history_json(id))
        {
            Some(h) => ("application/json", h.to_string().into_bytes()),
            None => return status_only(404, reason(404)),
        },
        _ => return status_only(404, reason(404)),
    };
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: {CSP}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method == "GET" {
        out.extend_from_slice(&body);
    }
    out
}

/// DNS rebinding: a web page elsewhere that makes its own name resolve to
/// this address would read the fleet through the operator's browser. The
/// page is addressed by IP (or `localhost`), so a request naming any other
/// host is refused; a request without `Host` (HTTP/1.0 tools) is served.
fn host_allowed(head: &str) -> bool {
    let Some(host) = head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("host").then(|| v.trim())
    }) else {
        return true;
    };
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

fn reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        421 => "Misdirected Request",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    }
}

/// A body-less answer.
pub fn status_only(code: u16, text: &str) -> Vec<u8> {
    format!("HTTP/1.1 {code} {text}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_get_only_and_sends_the_csp() {
        let live = Live::new("send");
        let ok = String::from_utf8(route("GET /api/fleet?x=1 HTTP/1.1\r\n\r\n", &live))
            .expect("test setup");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("script-src 'self'"));
        let post = String::from_utf8(route("POST / HTTP/1.1\r\n\r\n", &live)).expect("test setup");
        assert!(post.starts_with("HTTP/1.1 405"));
        let other = String::from_utf8(route("GET /../etc/passwd HTTP/1.1\r\n\r\n", &live))
            .expect("test setup");
        assert!(other.starts_with("HTTP/1.1 404"));
        let rebound = route(
            "GET /api/fleet HTTP/1.1\r\nHost: evil.example:8080\r\n\r\n",
            &live,
        );
        assert!(
            rebound.starts_with(b"HTTP/1.1 421"),
            "DNS rebinding refused"
        );
        for host in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "10.0.0.2"] {
            let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert!(route(&req, &live).starts_with(b"HTTP/1.1 200"), "{host}");
        }
        let unknown = route("GET /api/history?device=00 HTTP/1.1\r\n\r\n", &live);
        assert!(unknown.starts_with(b"HTTP/1.1 404"));
    }
}
