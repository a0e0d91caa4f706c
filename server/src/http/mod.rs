//! The fleet page's web server (`--http`): a tiny HTTP/1.1 server on
//! `std::net`, in its own thread, serving the page (HTML, JS and CSS built
//! into the binary, no CDN) and its live data as JSON.
//!
//! Read-only and bounded: GET and HEAD only, a request of at most
//! `request::MAX_REQUEST` bytes read within `request::HEAD_TIME`, at most
//! [`MAX_CONNECTIONS`] at a time (more are answered 503 and closed), one
//! request per connection. Device strings reach the page only as JSON
//! strings, which the page puts in text nodes, never in markup; a strict
//! Content-Security-Policy forbids inline and foreign scripts besides, and
//! a request naming a host other than an IP or `localhost` is refused
//! (DNS rebinding).
//! Binds loopback unless the operator names another address.

mod request;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{config, runtime, Error};
use crate::record::live::Live;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;

/// `--http` as given: `PORT` is `127.0.0.1:PORT`; `ADDR:PORT` is taken as is.
pub fn parse_addr(spec: &str) -> Result<SocketAddr, Error> {
    if let Ok(port) = spec.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    spec.parse::<SocketAddr>().map_err(|_| {
        config(format!(
            "--http {spec}: expected a port (e.g. 8080, served on 127.0.0.1) or ADDR:PORT"
        ))
    })
}

/// Bind `--http` and serve the page for `live` from a new thread.
pub fn serve(spec: &str, live: Arc<Live>) -> Result<SocketAddr, Error> {
    let addr = parse_addr(spec)?;
    let listener =
        TcpListener::bind(addr).map_err(|e| runtime(format!("binding --http {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| runtime(format!("--http {addr}: {e}")))?;
    if bound.ip().is_loopback() {
        log::info!("fleet page at http://{bound}/");
    } else {
        log::warn!(
            "fleet page at http://{bound}/ on a non-loopback address, as --http asked: anyone who reaches it sees the fleet (no authentication)"
        );
    }
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("fleet-page".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                accept(stream, &live, &active);
            }
        })
        .map_err(|e| runtime(format!("starting the fleet page server: {e}")))?;
    Ok(bound)
}

/// Serve one connection on its own thread, or refuse it when busy.
fn accept(mut stream: TcpStream, live: &Arc<Live>, active: &Arc<AtomicUsize>) {
    let timeout = Some(Duration::from_secs(2));
    let _ = stream.set_read_timeout(timeout);
    let _ = stream.set_write_timeout(timeout);
    if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
        active.fetch_sub(1, Ordering::SeqCst);
        let _ = stream.write_all(&request::status_only(503, "Service Unavailable"));
        return;
    }
    let live = Arc::clone(live);
    let done = Arc::clone(active);
    let spawned = std::thread::Builder::new()
        .name("fleet-page-conn".into())
        .spawn(move || {
            request::serve_one(stream, &live);
            done.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        active.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_means_loopback() {
        assert_eq!(
            parse_addr("8080").expect("test setup").to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            parse_addr("0.0.0.0:80").expect("test setup").to_string(),
            "0.0.0.0:80"
        );
        assert!(parse_addr("localhost").is_err());
    }
}
