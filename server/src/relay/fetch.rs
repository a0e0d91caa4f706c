//! The relay's HTTP(S) side: one `ureq` agent (rustls; the system's web
//! PKI roots, or only the CA of `--ca-file`), the manifest fetched whole,
//! and the image downloaded in a thread into the cache file with `Range`
//! requests, resuming where a dropped connection left it (R-RELAY-2).
//!
//! The download thread only writes bytes and advances [`Download::have`];
//! what those bytes are worth is decided by the send loop, which checks
//! every block against the signed manifest before a byte of it goes out.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::Agent;

use crate::error::{config, runtime, Error};

/// How often and how patiently a request is retried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Failed attempts in a row (no byte gained between them) before giving up.
    pub attempts: u32,
    /// The first pause before a retry; it doubles after each failure.
    pub first: Duration,
    /// The longest pause between two attempts.
    pub max: Duration,
}

/// The relay's retries: 8 attempts 0.2 s to 4 s apart ride out about 12 s
/// of origin outage.
pub const RETRY: Retry = Retry {
    attempts: 8,
    first: Duration::from_millis(200),
    max: Duration::from_secs(4),
};
/// A manifest larger than this is refused (a 1 GiB image in 4 KiB blocks
/// has a manifest of about 8 MiB).
const MANIFEST_MAX: u64 = 16 << 20;
/// The longest one request's body may take (ureq 3.2 has no per-read
/// timeout): at most this long stalled, and a download longer than this
/// continues in another Range request.
const BODY_BUDGET: Duration = Duration::from_secs(60);
/// Bytes read from the connection per write to the cache file.
const READ_BUF: usize = 64 << 10;

/// An HTTP(S) client for the origin.
pub fn agent(ca_file: Option<&Path>) -> Result<Agent, Error> {
    let mut tls = TlsConfig::builder();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| config(format!("--ca-file {}: {e}", path.display())))?;
        let certs = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<Vec<Certificate<'static>>, _>>()
            .map_err(|e| config(format!("--ca-file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(config(format!(
                "--ca-file {}: no PEM certificate in it",
                path.display()
            )));
        }
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    Ok(Agent::config_builder()
        .tls_config(tls.build())
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(15)))
        // The body of one request gets this long; a connection that stalls
        // (a link gone, a firewall dropping) is given up by then, and the
        // download goes on with a Range request from the first missing byte
        // (a request that was making progress starts a fresh retry budget).
        .timeout_recv_body(Some(BODY_BUDGET))
        .build()
        .into())
}

/// Fetch a small object (the manifest) whole, with the download's retries.
pub fn fetch_small(agent: &Agent, url: &str, retry: Retry) -> Result<Vec<u8>, Error> {
    let mut backoff = retry.first;
    let mut attempt = 1;
    loop {
        let got = agent
            .get(url)
            .call()
            .map_err(|e| e.to_string())
            .and_then(|r| {
                r.into_body()
                    .with_config()
                    .limit(MANIFEST_MAX)
                    .read_to_vec()
                    .map_err(|e| e.to_string())
            });
        match got {
            Ok(bytes) => return Ok(bytes),
            Err(e) if attempt >= retry.attempts => {
                return Err(runtime(format!("fetching {url}: {e} ({attempt} attempts)")))
            }
            Err(e) => {
                log::warn!(
                    "fetching {url}: {e}; attempt {attempt} of {}, again in {backoff:?}",
                    retry.attempts
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(retry.max);
                attempt += 1;
            }
        }
    }
}

/// A download's progress, shared by the download thread and the send loop.
#[derive(Debug, Default)]
pub struct Download {
    /// Bytes of the image in the cache file, from its start.
    have: AtomicU64,
    /// Bytes received from the origin by this process (the origin link's
    /// share of the relay's traffic).
    pub fetched: AtomicU64,
    /// Requests made for the image.
    pub requests: AtomicU64,
    /// Requests that resumed a partial download (a Range from past 0).
    pub resumes: AtomicU64,
    /// Why the download gave up, once it did.
    failed: Mutex<Option<String>>,
    /// When the last byte arrived.
    finished: Mutex<Option<std::time::Instant>>,
    /// When block 0 was verified: the carousel's data may start then.
    block_0: Mutex<Option<std::time::Instant>>,
}

impl Download {
    /// Bytes of the image in the cache file, from its start.
    pub fn have(&self) -> u64 {
        self.have.load(Ordering::Acquire)
    }

    /// Why the download gave up, if it did.
    pub fn failed(&self) -> Option<String> {
        self.failed.lock().map_or(None, |f| f.clone())
    }

    #[cfg(test)]
    pub(super) fn set_have(&self, have: u64) {
        self.have.store(have, Ordering::Release);
    }

    /// When the last byte arrived, once it did.
    pub fn finished_at(&self) -> Option<std::time::Instant> {
        self.finished.lock().map_or(None, |f| *f)
    }

    /// When block 0 was verified, once it was.
    pub fn block_0_at(&self) -> Option<std::time::Instant> {
        self.block_0.lock().map_or(None, |f| *f)
    }

    /// Block 0 was verified now.
    pub fn note_block_0(&self) {
        if let Ok(mut f) = self.block_0.lock() {
            f.get_or_insert_with(std::time::Instant::now);
        }
    }

    pub(super) fn give_up(&self, why: String) {
        if let Ok(mut f) = self.failed.lock() {
            *f = Some(why);
        }
    }
}

/// Download `url` into `file` from byte `have` on to `len`, in a thread.
pub fn spawn(
    agent: Agent,
    url: String,
    file: File,
    (have, len): (u64, u64),
    retry: Retry,
) -> Arc<Download> {
    let progress = Arc::new(Download::default());
    progress.have.store(have, Ordering::Release);
    let p = Arc::clone(&progress);
    std::thread::spawn(move || {
        let mut backoff = retry.first;
        let mut attempt = 1;
        while p.have() < len {
            let before = p.have();
            match fetch_range(&agent, &url, &file, len, &p) {
                Ok(()) => {}
                Err(e) => {
                    if p.have() > before {
                        // Progress since the last failure: a fresh budget.
                        attempt = 1;
                        backoff = retry.first;
                    }
                    if attempt >= retry.attempts {
                        p.give_up(format!(
                            "{e} ({attempt} attempts in a row without progress)"
                        ));
                        return;
                    }
                    log::warn!(
                        "downloading {url}: {e} at byte {} of {len}; resuming with a Range request in {backoff:?} (attempt {} of {})",
                        p.have(),
                        attempt + 1,
                        retry.attempts
                    );
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(retry.max);
                    attempt += 1;
                }
            }
        }
        if let Ok(mut f) = p.finished.lock() {
            *f = Some(std::time::Instant::now());
        }
        log::info!(
            "downloaded {url}: {len} bytes in the cache, {} fetched in {} requests ({} resumed)",
            p.fetched.load(Ordering::Relaxed),
            p.requests.load(Ordering::Relaxed),
            p.resumes.load(Ordering::Relaxed)
        );
    });
    progress
}

/// One request for the bytes from `progress.have()` to the end.
fn fetch_range(
    agent: &Agent,
    url: &str,
    file: &File,
    len: u64,
    progress: &Download,
) -> Result<(), String> {
    let from = progress.have();
    progress.requests.fetch_add(1, Ordering::Relaxed);
    if from > 0 {
        progress.resumes.fetch_add(1, Ordering::Relaxed);
    }
    let resp = agent
        .get(url)
        .header("Range", format!("bytes={from}-{}", len - 1))
        .call()
        .map_err(|e| e.to_string())?;
    let mut skip = match resp.status().as_u16() {
        206 => {
            let range = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !range.starts_with(&format!("bytes {from}-")) {
                return Err(format!(
                    "asked for bytes {from}- and got Content-Range {range:?}"
                ));
            }
            0
        }
        // The origin ignored the Range: skip what the cache has.
        200 => from,
        s => return Err(format!("HTTP status {s}")),
    };
    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; READ_BUF];
    let mut at = from;
    while at < len {
        let n = body.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("connection closed at byte {at} of {len}"));
        }
        progress.fetched.fetch_add(n as u64, Ordering::Relaxed);
        let mut piece = &buf[..n];
        if skip > 0 {
            let s = usize::try_from(skip).unwrap_or(usize::MAX).min(piece.len());
            piece = &piece[s..];
            skip -= s as u64;
        }
        let keep = usize::try_from(len - at)
            .unwrap_or(usize::MAX)
            .min(piece.len());
        file.write_all_at(&piece[..keep], at)
            .map_err(|e| format!("writing the cache file at byte {at}: {e}"))?;
        at += keep as u64;
        progress.have.store(at, Ordering::Release);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A one-object HTTP/1.1 origin on 127.0.0.1 that honours `Range:
    /// bytes=N-M` and closes its first connection after `cut` body bytes;
    /// returns its URL and the Range headers it was asked for.
    fn origin(body: Vec<u8>, cut: usize) -> (String, std::sync::mpsc::Receiver<String>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/fw.img", l.local_addr().expect("addr"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for (n, conn) in l.incoming().take(4).enumerate() {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut from = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(r) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        let _ = tx.send(r.trim().to_string());
                        from = r
                            .split('-')
                            .next()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0);
                    }
                }
                let len = body.len();
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{len}\r\nConnection: close\r\n\r\n",
                    len - from,
                    len - 1
                );
                let _ = conn.write_all(head.as_bytes());
                let end = if n == 0 { cut } else { len };
                let _ = conn.write_all(&body[from..end]);
            }
        });
        (url, rx)
    }

    #[test]
    fn r_relay_2_a_cut_connection_resumes_with_a_range_and_fetches_each_byte_once() {
        let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (url, ranges) = origin(body.clone(), 100_000);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cache.img");
        let file = File::create(&path).expect("cache");
        let len = body.len() as u64;
        let d = spawn(agent(None).expect("agent"), url, file, (0, len), RETRY);
        let t0 = std::time::Instant::now();
        while d.have() < body.len() as u64 && d.failed().is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "stuck at {}",
                d.have()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let asked: Vec<String> = ranges.try_iter().collect();
        let fetched = d.fetched.load(Ordering::Relaxed);
        println!(
            "ranges asked: {asked:?}; {fetched} bytes fetched for {}",
            body.len()
        );
        assert_eq!(d.failed(), None);
        assert_eq!(asked, ["0-299999", "100000-299999"]);
        assert_eq!(d.resumes.load(Ordering::Relaxed), 1);
        assert_eq!(fetched, body.len() as u64);
        assert_eq!(std::fs::read(&path).expect("read"), body);
    }

    #[test]
    fn r_relay_2_an_origin_that_is_gone_is_given_up_after_bounded_attempts() {
        // A port nothing listens on: every attempt is refused at once.
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/fw.img", l.local_addr().expect("addr"));
        drop(l);
        let dir = tempfile::tempdir().expect("tempdir");
        let file = File::create(dir.path().join("c")).expect("cache");
        let t0 = std::time::Instant::now();
        let quick = Retry {
            attempts: 5,
            first: Duration::from_millis(10),
            max: Duration::from_millis(40),
        };
        let d = spawn(agent(None).expect("agent"), url, file, (0, 1000), quick);
        while d.failed().is_none() {
            assert!(t0.elapsed() < Duration::from_secs(30), "never gave up");
            std::thread::sleep(Duration::from_millis(20));
        }
        let why = d.failed().unwrap_or_default();
        println!("gave up after {:.1} s: {why}", t0.elapsed().as_secs_f64());
        assert!(why.contains("5 attempts"), "{why}");
        assert_eq!(d.requests.load(Ordering::Relaxed), 5);
    }
}
