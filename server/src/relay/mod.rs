//! `firmcast relay`: one site's sender and repair server, fed over HTTP(S)
//! from an origin (any web server, object store or CDN) instead of a local
//! image file.
//!
//! ```text
//!   origin ──HTTPS, Range── fetch (thread) ──▶ cache file
//!                                                 │ read back, checked per block (R-RELAY-3)
//!   manifest ──HTTPS── verified (R-RELAY-1) ──▶ cached::CachedImage ──▶ send::run_fed
//!                                                   (carousel + --repair-listen, as `firmcast send`)
//!   devices' Status ──▶ fleet ──▶ forward (--forward-status, R-RELAY-4) ──▶ central `firmcast status`
//! ```
//!
//! The send loop is `firmcast send`'s own; the relay only supplies its
//! blocks (holding the carousel until the next block has arrived and
//! verified) and the Status forwarding.

pub mod cached;
pub mod fetch;
pub mod forward;

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use crate::cli::{RecordArgs, RelayArgs, SendArgs};
use crate::error::{config, runtime, Error};
use crate::feed::Feed;
use crate::manifest_file::load_manifest;

use cached::CachedImage;
use forward::StatusForward;

/// Run `firmcast relay`; returns the exit code.
pub fn run(args: &RelayArgs) -> Result<u8, Error> {
    let agent = fetch::agent(args.ca_file.as_deref())?;
    let (cache, temporary) = match &args.cache {
        Some(p) => (p.clone(), false),
        None => (
            std::env::temp_dir().join(format!("firmcast-relay-{}.img", std::process::id())),
            true,
        ),
    };
    let manifest_path = PathBuf::from(format!("{}.manifest", cache.display()));
    let _cleanup = temporary.then(|| Cleanup(vec![cache.clone(), manifest_path.clone()]));
    let signed = fetch::fetch_small(&agent, &args.manifest_url, fetch::RETRY)?;
    // A cache left by a relay for another image starts over.
    let same = std::fs::read(&manifest_path).is_ok_and(|old| old == signed);
    std::fs::write(&manifest_path, &signed)
        .map_err(|e| config(format!("writing {}: {e}", manifest_path.display())))?;
    // R-RELAY-1: the signature is checked with the devices' trust root
    // before anything else is fetched.
    let (_, info, _) = load_manifest(&manifest_path, Some(&args.public_key)).map_err(|e| {
        runtime(format!(
            "manifest from {}: {e} (nothing was sent)",
            args.manifest_url
        ))
    })?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&cache)
        .map_err(|e| config(format!("--cache {}: {e}", cache.display())))?;
    let on_disk = file
        .metadata()
        .map_err(|e| config(format!("--cache {}: {e}", cache.display())))?
        .len();
    let have = if same && on_disk <= info.image_len {
        on_disk
    } else {
        file.set_len(0)
            .map_err(|e| config(format!("--cache {}: {e}", cache.display())))?;
        0
    };
    log::info!(
        "relay: manifest {} verified (image id {}, {} bytes, {} blocks); downloading {} from byte {have} into {}",
        args.manifest_url,
        info.image_id,
        info.image_len,
        info.block_count(),
        args.origin,
        cache.display()
    );
    let writer = file
        .try_clone()
        .map_err(|e| runtime(format!("--cache {}: {e}", cache.display())))?;
    let started = std::time::Instant::now();
    let download = fetch::spawn(
        agent,
        args.origin.clone(),
        writer,
        (have, info.image_len),
        fetch::RETRY,
    );
    let blocks = CachedImage::new(
        info,
        args.origin.clone(),
        args.manifest_url.clone(),
        file,
        download.clone(),
    )?;
    let mut forward = args.forward_status.map(StatusForward::open).transpose()?;
    let send_args = send_args(args, cache.clone(), manifest_path.clone());
    let result = crate::send::run_fed(
        &send_args,
        Feed {
            blocks: Some(Box::new(blocks)),
            forward: forward.as_mut(),
        },
    );
    log::info!(
        "relay: fetched {} bytes of the image from {} in {} requests ({} resumed with Range){}",
        download.fetched.load(Ordering::Relaxed),
        args.origin,
        download.requests.load(Ordering::Relaxed),
        download.resumes.load(Ordering::Relaxed),
        forward.as_ref().map_or(String::new(), |f| format!(
            "; status forwarding {}",
            f.json()
        ))
    );
    let at = |t: Option<std::time::Instant>| {
        t.map_or("never".to_string(), |t| {
            format!("{:.2} s", t.duration_since(started).as_secs_f64())
        })
    };
    // Streaming, measured: the carousel's data starts with block 0, not
    // with the last byte.
    log::info!(
        "relay: block 0 verified (carousel data from then on) at {}, download complete at {}",
        at(download.block_0_at()),
        at(download.finished_at())
    );
    result
}

/// Files removed when the relay ends, however it ends (the default cache).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `firmcast send`'s arguments for the relay's site.
fn send_args(a: &RelayArgs, image: PathBuf, manifest: PathBuf) -> SendArgs {
    SendArgs {
        image,
        manifest,
        public_key: Some(a.public_key.clone()),
        group: a.group,
        interface: a.interface,
        rate: a.rate,
        ttl: a.ttl,
        until_done: a.until_done,
        devices: a.devices.clone(),
        abort_if_failed: None,
        duration: a.duration,
        passes: a.passes,
        announce_every: crate::cli::ANNOUNCE_EVERY,
        manifest_repeats: crate::cli::MANIFEST_REPEATS,
        manifest_lead: crate::cli::MANIFEST_LEAD,
        repair_listen: a.repair_listen,
        repair_group: a.repair_group,
        repair_source: a.repair_source,
        repair: a.repair,
        roster: a.roster.clone(),
        json: a.json,
        verbose: a.verbose,
        record: RecordArgs {
            db: a.record.db.clone(),
            http: a.record.http.clone(),
        },
    }
}
