//! Per-site relays fed over HTTPS (issue 18, R-RELAY-1..4), in network
//! namespaces:
//!
//! ```text
//!   PFXo origin 10.88.0.2 ── PFXr router (ip_forward) ── PFXa site A 10.88.1.2
//!   nginx HTTPS (test CA)     10.88.0.1 / 1.1 / 2.1   └── PFXb site B 10.88.2.2
//!   firmcast status (central)
//! ```
//!
//! Each site namespace holds its relay and two agents, multicast on the
//! site's own loopback; the relays fetch from nginx over HTTPS through the
//! router and forward their devices' Status to the central status in the
//! origin's namespace. Root only: prints NOT RUN otherwise.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use firmcast_integration::netns::{not_run, say, secs, wait_until};
use firmcast_integration::{
    agent_config, bin, path_str, release, run_ok, target_holds, AgentSpec, Net, Proc, Scratch,
};

const IMAGE_LEN: usize = 2 << 20;
const ORIGIN: &str = "10.88.0.2";
const CENTRAL: &str = "10.88.0.2:7856";

/// The namespaces of one run; deleted on drop, also when a test panics.
struct Topo {
    prefix: String,
}

fn ip(args: &[&str]) {
    run_ok(Command::new("ip").args(args), "ip");
}

fn in_ns(ns: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    run_ok(Command::new("ip").args(&all), "ip netns exec");
}

impl Topo {
    fn up() -> Topo {
        let prefix = format!("fr{}", std::process::id());
        let t = Topo { prefix };
        let p = &t.prefix;
        for n in ["o", "r", "a", "b"] {
            ip(&["netns", "add", &format!("{p}{n}")]);
            in_ns(&format!("{p}{n}"), &["ip", "link", "set", "lo", "up"]);
        }
        in_ns(
            &format!("{p}r"),
            &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
        );
        for (n, subnet) in [("o", 0), ("a", 1), ("b", 2)] {
            let (host, router) = (format!("{p}{n}"), format!("{p}r"));
            let (h_if, r_if) = (format!("{p}{n}h"), format!("{p}{n}r"));
            ip(&[
                "link", "add", &h_if, "netns", &host, "type", "veth", "peer", "name", &r_if,
                "netns", &router,
            ]);
            in_ns(
                &host,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("10.88.{subnet}.2/24"),
                    "dev",
                    &h_if,
                ],
            );
            in_ns(&host, &["ip", "link", "set", &h_if, "up"]);
            in_ns(
                &host,
                &[
                    "ip",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("10.88.{subnet}.1"),
                ],
            );
            in_ns(
                &router,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("10.88.{subnet}.1/24"),
                    "dev",
                    &r_if,
                ],
            );
            in_ns(&router, &["ip", "link", "set", &r_if, "up"]);
        }
        t
    }

    fn ns(&self, n: &str) -> String {
        format!("{}{n}", self.prefix)
    }

    /// Start `program args` inside namespace `n`.
    fn start(&self, n: &str, dir: &Scratch, name: &str, program: &Path, args: &[&str]) -> Proc {
        let ns = self.ns(n);
        let mut all = vec!["netns", "exec", ns.as_str(), path_str(program)];
        all.extend_from_slice(args);
        Proc::start(name, Path::new("/usr/sbin/ip"), &all, dir.path())
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        for n in ["o", "r", "a", "b"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .status();
        }
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args([
            "-c",
            &format!("command -v {tool} >/dev/null 2>&1 || test -x /usr/sbin/{tool}"),
        ])
        .status()
        .is_ok_and(|s| s.success())
}

/// A CA and a certificate for the origin's address, made with openssl.
fn make_ca(dir: &Scratch) {
    let d = dir.path();
    let run = |args: &[&str]| {
        run_ok(Command::new("openssl").args(args).current_dir(d), "openssl");
    };
    // A new P-256 key, unencrypted, and where it and the request go.
    let new_key = |key: &'static str, out: &'static str| {
        [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key,
            "-out",
            out,
        ]
    };
    let ca_subject = ["-days", "2", "-subj", "/CN=firmcast test CA"];
    run(&[
        &["req", "-x509"][..],
        &new_key("ca.key", "ca.pem"),
        &ca_subject,
    ]
    .concat());
    run(&[
        &["req"][..],
        &new_key("origin.key", "origin.csr"),
        &["-subj", "/CN=origin"],
    ]
    .concat());
    fs::write(
        d.join("origin.ext"),
        format!(
            "subjectAltName=IP:{ORIGIN}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .expect("write ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "origin.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "origin.pem",
        "-days",
        "2",
        "-extfile",
        "origin.ext",
    ]);
}

/// nginx serving `dir/www` over HTTPS on the origin, 1 MB/s per connection
/// (so the cut lands mid-download), one access-log line per request with
/// the client, the Range asked for, the status and the body bytes sent.
fn nginx_conf(dir: &Scratch) -> std::path::PathBuf {
    let d = path_str(dir.path());
    fs::create_dir_all(dir.join("nginx-tmp")).expect("tmp dir");
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  log_format fc '$remote_addr \"$request\" $status $body_bytes_sent range=\"$http_range\"';\n\
           access_log {d}/access.log fc;\n  client_body_temp_path {d}/nginx-tmp/body;\n\
           proxy_temp_path {d}/nginx-tmp/proxy;\n  fastcgi_temp_path {d}/nginx-tmp/fcgi;\n\
           uwsgi_temp_path {d}/nginx-tmp/uwsgi;\n  scgi_temp_path {d}/nginx-tmp/scgi;\n\
           server {{\n    listen {ORIGIN}:8443 ssl;\n    ssl_certificate {d}/origin.pem;\n\
             ssl_certificate_key {d}/origin.key;\n    root {d}/www;\n    limit_rate 1m;\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    fs::write(&path, conf).expect("write nginx.conf");
    path
}

fn start_nginx(t: &Topo, dir: &Scratch, conf: &Path) -> Proc {
    let p = t.start(
        "o",
        dir,
        "nginx",
        Path::new("/usr/sbin/nginx"),
        &["-c", path_str(conf)],
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &t.ns("o"),
                    "sh",
                    "-c",
                    "ss -ltn | grep -q ':8443 '",
                ])
                .status()
                .is_ok_and(|s| s.success())
        }),
        "nginx did not listen; error log:\n{}",
        fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default()
    );
    p
}

/// The access log's lines from `client`: (status, body bytes, range).
fn requests_from(dir: &Scratch, client: &str, object: &str) -> Vec<(u32, u64, String)> {
    let log = fs::read_to_string(dir.join("access.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.starts_with(&format!("{client} ")) && l.contains(object))
        .filter_map(|l| {
            let after = l.split("\" ").nth(1)?;
            let mut f = after.split_whitespace();
            let status = f.next()?.parse().ok()?;
            let bytes = f.next()?.parse().ok()?;
            let range = l
                .split("range=\"")
                .nth(1)?
                .trim_end_matches('"')
                .to_string();
            Some((status, bytes, range))
        })
        .collect()
}

/// `firmcast relay` from `origin` on the site's loopback (its devices'
/// interface), the CA and key given; the caller adds group, rate and stop.
fn relay_args<'a>(origin: &'a str, manifest: &'a str, ca: &'a str, key: &'a str) -> Vec<&'a str> {
    vec![
        "relay",
        "--origin",
        origin,
        "--manifest-url",
        manifest,
        "--ca-file",
        ca,
        "--public-key",
        key,
        "--interface",
        "127.0.0.1",
    ]
}

/// (block 0 verified, download complete) in seconds from the relay's log.
fn streaming_times(log: &str) -> (f64, f64) {
    let line = log
        .lines()
        .find(|l| l.contains("relay: block 0 verified"))
        .unwrap_or_default();
    let num = |after: &str| {
        line.split(after)
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (num("from then on) at "), num("download complete at "))
}

#[test]
fn r_relay_two_sites_fetch_once_over_https_resume_after_a_cut_and_report_centrally() {
    if not_run("relay_netns::two_sites").is_some() {
        return;
    }
    for tool in ["nginx", "openssl", "ss"] {
        assert!(have(tool), "{tool} is missing: run scripts/setup-netns.sh");
    }
    let started = Instant::now();
    let dir = Scratch::new("relay-netns");
    let rel = release(&dir, IMAGE_LEN, "acme,rt1", "2.0.0", 18);
    make_ca(&dir);
    let www = dir.join("www");
    fs::create_dir_all(&www).expect("www");
    fs::copy(&rel.image, www.join("fw.img")).expect("copy image");
    fs::copy(&rel.manifest, www.join("fw.manifest")).expect("copy manifest");
    let mut tampered = rel.bytes.clone();
    let block3 = 3 * 65_536 + 100;
    tampered[block3] ^= 0x40;
    fs::write(www.join("tampered.img"), &tampered).expect("tampered");
    let conf = nginx_conf(&dir);
    let t = Topo::up();
    let mut nginx = start_nginx(&t, &dir, &conf);
    let firmcast = bin("firmcast");
    let agent_bin = bin("firmcast-agent");
    let mut central = t.start(
        "o",
        &dir,
        "central",
        &firmcast,
        &["status", "--listen", CENTRAL, "--json", "--duration", "60"],
    );
    let net = Net {
        group: "239.88.0.1:7854".into(),
        repair_group: "239.88.0.2:7855".into(),
        repair_listen: "127.0.0.1:7855".into(),
    };
    let url = |o: &str| format!("https://{ORIGIN}:8443/{o}");
    let (img_url, man_url) = (url("fw.img"), url("fw.manifest"));
    let ca = dir.join("ca.pem");
    let mut agents = Vec::new();
    let mut relays = Vec::new();
    for site in ["a", "b"] {
        for n in 0..2 {
            let name = format!("site{site}-dev{n}");
            let spec = AgentSpec::new(&name, &rel.public_key, 4 << 20);
            let (config, target) = agent_config(&dir, &net, &spec);
            let p = t.start(
                site,
                &dir,
                &name,
                &agent_bin,
                &["--config", path_str(&config), "--foreground", "--verbose"],
            );
            agents.push((p, target));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    for site in ["a", "b"] {
        let cache = dir.join(&format!("cache-{site}.img"));
        let p = t.start(
            site,
            &dir,
            &format!("relay-{site}"),
            &firmcast,
            &[
                &relay_args(&img_url, &man_url, path_str(&ca), path_str(&rel.public_key))[..],
                &["--group", &net.group, "--repair-group", &net.repair_group],
                &["--repair-listen", &net.repair_listen, "--rate", "20M"],
                &[
                    "--until-done",
                    "2",
                    "--duration",
                    "50",
                    "--cache",
                    path_str(&cache),
                ],
                &["--forward-status", CENTRAL],
            ]
            .concat(),
        );
        relays.push((p, cache));
    }
    // Cut the origin mid-download: nginx gone for a second, then back.
    let partial = wait_until(Duration::from_secs(15), || {
        relays
            .iter()
            .all(|(_, cache)| fs::metadata(cache).is_ok_and(|m| m.len() > 300_000))
    });
    assert!(
        partial,
        "the downloads did not start:\n{}",
        relays[0].0.output()
    );
    let cut_at = secs(started);
    nginx.kill();
    std::thread::sleep(Duration::from_secs(1));
    let _nginx = start_nginx(&t, &dir, &conf);
    say(&format!("relay_netns: origin cut at {cut_at:.1} s for 1 s"));
    for (p, _) in relays.iter_mut() {
        let code = p.expect_exit(Duration::from_secs(55));
        assert_eq!(code, 0, "{} failed:\n{}", p.name, p.output());
    }
    let relays_done = secs(started);
    for (i, (p, target)) in agents.iter_mut().enumerate() {
        assert!(
            wait_until(Duration::from_secs(10), || target_holds(target, &rel.bytes)),
            "device {i} does not hold the image:\n{}",
            p.output()
        );
    }
    for (site, client) in [("a", "10.88.1.2"), ("b", "10.88.2.2")] {
        let reqs = requests_from(&dir, client, "/fw.img");
        let logged: u64 = reqs.iter().map(|r| r.1).sum();
        let resumed = reqs
            .iter()
            .any(|(st, _, range)| *st == 206 && !range.starts_with("bytes=0-"));
        let relay_log = relays[if site == "a" { 0 } else { 1 }].0.output();
        let fetched = relay_log
            .split("relay: fetched ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        say(&format!(
            "relay_netns: site {site}: the relay fetched {fetched} bytes of a {IMAGE_LEN}-byte image; nginx logged {} completed requests with {logged} bytes (the cut one is not logged): {reqs:?}",
            reqs.len()
        ));
        assert!(
            resumed,
            "site {site}: no Range resume in the access log: {reqs:?}"
        );
        assert_eq!(
            fetched, IMAGE_LEN as u64,
            "site {site}: the origin link carried the image more than once:\n{relay_log}"
        );
        assert!(
            logged <= IMAGE_LEN as u64,
            "site {site}: {logged} bytes logged"
        );
        // Streaming: the carousel's data started before the last byte came.
        let (first, complete) = streaming_times(&relay_log);
        say(&format!(
            "relay_netns: site {site}: block 0 verified at {first:.2} s, download complete at {complete:.2} s"
        ));
        assert!(first < complete, "site {site}: not streaming:\n{relay_log}");
    }
    // Central status: every device of both sites, each at its relay.
    let both = wait_until(Duration::from_secs(5), || {
        let out = central.output();
        out.contains("\"addr\":\"10.88.1.2:") && out.contains("\"addr\":\"10.88.2.2:")
    });
    let out = central.output();
    let ids: std::collections::BTreeSet<&str> = out
        .split("\"device_id\":\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    say(&format!(
        "relay_netns: central status saw {} devices: {ids:?}; both sites: {both}",
        ids.len()
    ));
    assert!(both && ids.len() == 4, "central status:\n{out}");
    central.kill();

    // A relay restarted with the same --cache fetches nothing again.
    let mut again = t.start(
        "a",
        &dir,
        "relay-a-again",
        &firmcast,
        &[
            &relay_args(&img_url, &man_url, path_str(&ca), path_str(&rel.public_key))[..],
            &[
                "--group",
                "239.88.9.1:7854",
                "--rate",
                "50M",
                "--passes",
                "1",
            ],
            &["--cache", path_str(&relays[0].1)],
        ]
        .concat(),
    );
    let code = again.expect_exit(Duration::from_secs(30));
    let out = again.output();
    let line = out
        .lines()
        .find(|l| l.contains("relay: fetched"))
        .unwrap_or("");
    say(&format!(
        "relay_netns: restart on a full cache: exit {code}; {line}"
    ));
    assert!(code == 0 && line.contains("fetched 0 bytes"), "{out}");

    // R-RELAY-1: a manifest that does not verify with the key given: refused.
    let other = dir.join("other-keys");
    run_ok(
        Command::new(&firmcast).args(["keygen", "--out", path_str(&other)]),
        "keygen",
    );
    // A relay that must refuse: its exit code and output, the error line shown.
    let refused = |site: &str, what: &str, origin: &str, key: &Path| {
        let mut p = t.start(
            site,
            &dir,
            &format!("relay-{}", what.replace(' ', "-")),
            &firmcast,
            &[
                &relay_args(origin, &man_url, path_str(&ca), path_str(key))[..],
                &[
                    "--group",
                    "239.88.9.1:7854",
                    "--rate",
                    "20M",
                    "--duration",
                    "30",
                ],
            ]
            .concat(),
        );
        let code = p.expect_exit(Duration::from_secs(30));
        let out = p.output();
        say(&format!(
            "relay_netns: {what}: exit {code}; {}",
            out.lines().find(|l| l.contains("error")).unwrap_or("")
        ));
        (code, out)
    };
    let (code, out) = refused(
        "b",
        "manifest under another key",
        &img_url,
        &other.join("firmcast.pub"),
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("nothing was sent"), "{out}");
    assert_eq!(
        requests_from(&dir, "10.88.2.2", "/fw.img").len(),
        1,
        "R-RELAY-1: the image was fetched before the manifest verified"
    );

    // R-RELAY-3: a tampered object on the origin: refused, the block named, exit 1.
    let (code, out) = refused(
        "a",
        "tampered origin",
        &url("tampered.img"),
        &rel.public_key,
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("block 3 (bytes 196608..262144)")
            && out.contains("nothing of block 3 was sent"),
        "{out}"
    );
    say(&format!(
        "relay_netns: relays done at {relays_done:.1} s, whole test {:.1} s",
        secs(started)
    ));
}
