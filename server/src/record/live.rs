//! What the fleet page shows, kept up to date from the reports: each
//! device's latest report and its recent history (state changes), and the
//! fleet's totals over time. Bounded: at most [`MAX_DEVICES`] devices,
//! [`HISTORY`] changes per device and [`SAMPLES`] points of the progress
//! plot (older points are thinned, never grown). As in the fleet table
//! (R-FLEET-3), a new device on a full page takes the place of the
//! unauthenticated device heard from longest ago, so a flood of forged ids
//! cannot keep genuine devices off the page for good; authenticated devices
//! are never evicted.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;

use serde_json::{json, Value};

use super::{has_image, is_failure, unix_ms, Report};

/// Devices the page tracks (about 2 KB each at most).
pub const MAX_DEVICES: usize = 16_384;
/// State changes kept per device.
pub const HISTORY: usize = 16;
/// Points of the progress plot; when full, every other point is dropped.
pub const SAMPLES: usize = 600;
/// Least time between two points of the progress plot.
const SAMPLE_MS: i64 = 500;

/// One device on the page.
#[derive(Debug)]
struct Device {
    latest: Report,
    reports: u64,
    /// (time, state, blocks done, reason) at each change of state or reason.
    history: VecDeque<(i64, String, u32, String)>,
}

/// The page's state; shared by the hook and the HTTP threads.
#[derive(Debug)]
pub struct Live {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    tool: &'static str,
    started_ms: i64,
    image_id: String,
    what: String,
    devices: BTreeMap<String, Device>,
    /// (last report, device) of the unauthenticated devices: eviction order.
    unauthenticated: BTreeSet<(i64, String)>,
    /// Devices that left a full page for a newcomer.
    evicted: u64,
    /// Reports not shown: the page was full of authenticated devices.
    not_shown: u64,
    reports: u64,
    /// (time, devices done or later, devices failed or refused, devices seen).
    samples: Vec<(i64, u32, u32, u32)>,
}

impl Live {
    /// An empty page for `tool`.
    pub fn new(tool: &'static str) -> Live {
        Live {
            inner: Mutex::new(Inner {
                tool,
                started_ms: unix_ms(),
                image_id: String::new(),
                what: String::new(),
                devices: BTreeMap::new(),
                unauthenticated: BTreeSet::new(),
                evicted: 0,
                not_shown: 0,
                reports: 0,
                samples: Vec::with_capacity(SAMPLES),
            }),
        }
    }

    /// What is being rolled out (the page's header).
    pub fn set_rollout(&self, image_id: &str, what: &str) {
        if let Ok(mut s) = self.inner.lock() {
            s.image_id = image_id.to_string();
            s.what = what.to_string();
        }
    }

    /// Take one report.
    pub fn push(&self, r: &Report) {
        let Ok(mut s) = self.inner.lock() else {
            return;
        };
        s.reports += 1;
        match s.devices.get(&r.device) {
            Some(old) if !old.latest.authenticated => {
                let key = (old.latest.at_ms, r.device.clone());
                s.unauthenticated.remove(&key);
            }
            Some(_) => {}
            None if s.devices.len() >= MAX_DEVICES => match s.unauthenticated.pop_first() {
                Some((_, victim)) => {
                    s.devices.remove(&victim);
                    s.evicted += 1;
                }
                None => {
                    s.not_shown += 1;
                    return;
                }
            },
            None => {}
        }
        if !r.authenticated {
            s.unauthenticated.insert((r.at_ms, r.device.clone()));
        }
        let d = s.devices.entry(r.device.clone()).or_insert_with(|| Device {
            latest: r.clone(),
            reports: 0,
            history: VecDeque::with_capacity(HISTORY),
        });
        let changed = d.reports == 0 || d.latest.state != r.state || d.latest.reason != r.reason;
        d.reports += 1;
        d.latest = r.clone();
        if changed {
            if d.history.len() == HISTORY {
                d.history.pop_front();
            }
            d.history
                .push_back((r.at_ms, r.state.clone(), r.blocks_done, r.reason.clone()));
        }
        s.sample(r.at_ms);
    }

    /// One device's history (oldest first), or `None` if it is not on the page.
    pub fn history_json(&self, device: &str) -> Option<Value> {
        let s = self.inner.lock().ok()?;
        let d = s.devices.get(device)?;
        Some(Value::Array(
            d.history
                .iter()
                .map(|(t, st, b, why)| {
                    json!({ "at_ms": t, "state": st, "blocks_done": b, "reason": why })
                })
                .collect(),
        ))
    }

    /// The page's JSON: rollout, totals, plot points and devices (their
    /// histories one at a time, from [`Live::history_json`]). Strings
    /// from devices are JSON strings; the page puts them in text nodes only.
    pub fn to_json(&self) -> Value {
        let Ok(mut s) = self.inner.lock() else {
            return json!({});
        };
        s.sample(unix_ms());
        let mut states = BTreeMap::<&str, u64>::new();
        for d in s.devices.values() {
            *states.entry(d.latest.state.as_str()).or_insert(0) += 1;
        }
        let devices: Vec<Value> = s
            .devices
            .values()
            .map(|d| {
                let r = &d.latest;
                json!({
                    "device": r.device,
                    "addr": r.addr,
                    "state": r.state,
                    "reason": r.reason,
                    "blocks_done": r.blocks_done,
                    "blocks_total": r.blocks_total,
                    "version": r.version,
                    "image_id": r.image_id,
                    "authenticated": r.authenticated,
                    "last_ms": r.at_ms,
                    "reports": d.reports,
                })
            })
            .collect();
        json!({
            "tool": s.tool,
            "image_id": s.image_id,
            "what": s.what,
            "started_ms": s.started_ms,
            "now_ms": unix_ms(),
            "reports": s.reports,
            "not_shown": s.not_shown,
            "evicted": s.evicted,
            "states": states,
            "samples": s.samples.iter().map(|&(t, d, f, n)| json!([t, d, f, n])).collect::<Vec<_>>(),
            "devices": devices,
        })
    }
}

impl Inner {
    /// Add a plot point at `now_ms` unless the last is recent.
    fn sample(&mut self, now_ms: i64) {
        if self
            .samples
            .last()
            .is_some_and(|&(t, ..)| now_ms - t < SAMPLE_MS)
        {
            return;
        }
        if self.samples.len() >= SAMPLES {
            // Thin: keep every other point, so the plot spans the whole run.
            let mut i = 0;
            self.samples.retain(|_| {
                i += 1;
                i % 2 == 1
            });
        }
        let (mut done, mut bad) = (0u32, 0u32);
        for d in self.devices.values() {
            done += u32::from(has_image(&d.latest.state));
            bad += u32::from(is_failure(&d.latest.state));
        }
        let seen = u32::try_from(self.devices.len()).unwrap_or(u32::MAX);
        self.samples.push((now_ms, done, bad, seen));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_and_plot_stay_bounded() {
        let live = Live::new("send");
        for n in 0..10_000u32 {
            let state = if n % 2 == 0 { "receiving" } else { "verifying" };
            live.push(&Report {
                at_ms: i64::from(n) * 1000,
                device: "00000000000000aa".into(),
                image_id: "0011223344556677".into(),
                addr: "127.0.0.1:1".into(),
                state: state.into(),
                reason: "none".into(),
                blocks_done: n,
                blocks_total: 10_000,
                version: "<b>1</b>".into(),
                authenticated: false,
            });
        }
        let v = live.to_json();
        let dev = &v["devices"][0];
        let history = live.history_json("00000000000000aa").unwrap_or_default();
        assert_eq!(history.as_array().map(Vec::len), Some(HISTORY));
        assert!(v["samples"].as_array().map_or(0, Vec::len) <= SAMPLES);
        assert_eq!(
            dev["version"], "<b>1</b>",
            "kept as data, escaped by the page"
        );
    }

    #[test]
    fn a_flood_of_forged_ids_cannot_keep_a_device_off_the_page() {
        let live = Live::new("send");
        let report = |n: u64, authenticated: bool| Report {
            at_ms: i64::try_from(n).unwrap_or(0),
            device: format!("{n:016x}"),
            image_id: "0011223344556677".into(),
            addr: "127.0.0.1:1".into(),
            state: "receiving".into(),
            reason: "none".into(),
            blocks_done: 0,
            blocks_total: 1,
            version: "1".into(),
            authenticated,
        };
        live.push(&report(0, true));
        for n in 1..(MAX_DEVICES as u64 * 2) {
            live.push(&report(n, false));
        }
        let genuine = report(u64::MAX >> 1, false);
        live.push(&genuine);
        let v = live.to_json();
        let devices = v["devices"].as_array().map_or(0, Vec::len);
        println!("{devices} devices on the page, {} evicted", v["evicted"]);
        assert_eq!(devices, MAX_DEVICES);
        let on_page = |id: &str| {
            v["devices"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x["device"] == id))
        };
        assert!(on_page(&genuine.device), "the newest device is shown");
        assert!(on_page("0000000000000000"), "an authenticated device stays");
    }
}
