//! The fleet page (issue 16) in a real browser: Debian's headless Chromium
//! loads `firmcast send --http` during a loopback update, and the test
//! checks the rendered DOM (devices, states, totals, a hostile version
//! string shown as text) and keeps a screenshot at
//! `target/test-artifacts/fleet-page.png` (printed). Skips, saying why,
//! only where no Chromium is installed (scripts/setup-browser.sh installs it).

use std::fs;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use firmcast_integration::*;
use proto::wire::{DeviceState, ImageId, Reason, Status};

const MIB: usize = 1 << 20;
const FLASH: u64 = 8 << 20;
/// A version string a hostile device might send: markup, if the page used it as such.
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

/// The browser, if installed.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

/// Run headless Chromium with `args` on `url`, bounded to 60 s, killed by
/// PID on time-out; returns its stdout.
fn run_chromium(browser: &Path, dir: &Scratch, tag: &str, args: &[&str], url: &str) -> String {
    let out_path = dir.join(&format!("chromium-{tag}.out"));
    let err_path = dir.join(&format!("chromium-{tag}.err"));
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--virtual-time-budget=4000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            path_str(&dir.join("chromium-profile"))
        ))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("chromium stdout"))
        .stderr(fs::File::create(&err_path).expect("chromium stderr"))
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "chromium ({tag}) did not finish in 60 s:\n{}",
                    fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
        }
    }
    fs::read_to_string(&out_path).unwrap_or_default()
}

/// A forged refusal from a device whose version string is markup.
fn hostile_refusal(image: ImageId) -> Vec<u8> {
    let st = Status {
        reason: Reason::WrongBoard,
        ..status_report(0xbad0, DeviceState::Refused, HOSTILE)
    };
    status_datagram(image, st)
}

/// `count` occurrences of `needle` in `hay`.
fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

#[test]
fn chromium_renders_the_live_fleet_page_of_a_loopback_update() {
    let Some(browser) = chromium() else {
        println!("SKIPPED: no chromium on PATH (scripts/setup-browser.sh installs Debian's)");
        return;
    };
    let dir = Scratch::new("fleet-page");
    let net = Net::for_test(0);
    let rel = release(&dir, 2 * MIB + 5, "acme,rt1", "2.1.0", 21);
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let http = format!("127.0.0.1:{port}");
    let mut agents = Vec::new();
    for i in 0..3 {
        let name = format!("page{i}");
        let mut spec = AgentSpec::new(&name, &rel.public_key, FLASH);
        // Slow flash (33 blocks x 120 ms): the first render comes mid-update.
        spec.block_delay_ms = 120;
        let (config, _) = agent_config(&dir, &net, &spec);
        agents.push(start_agent(&dir, &name, &config));
    }
    let port = port.to_string();
    let mut args = vec!["--rate", "8M", "--duration", "90", "--http", &port];
    args.extend(inline_repair_args(&net));
    let mut sender = start_sender(&dir, &net, &rel, "sender", &args);
    assert_eq!(
        fleet_page_addr(&mut sender),
        http,
        "--http PORT is loopback"
    );
    let image = ImageId(sender_image_id(&mut sender));
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.send_to(&hostile_refusal(image), &net.repair_listen)
        .expect("send");

    // Mid-update: the page is served and a first render shows the devices.
    let early = run_chromium(
        &browser,
        &dir,
        "early",
        &["--dump-dom"],
        &format!("http://{http}/"),
    );
    assert!(
        early.contains("data-state=\"live\""),
        "the page never loaded its data:\n{early}"
    );
    println!(
        "mid-update render: {} device rows, {} done",
        count(&early, "<tr class=\""),
        count(&early, "data-state=\"done\"><td>")
    );
    for a in agents.iter_mut() {
        let code = a.expect_exit(Duration::from_secs(60));
        assert_eq!(code, 10, "{}: exit 10 = updated\n{}", a.name, a.output());
    }
    // The agents' last reports reach the sender before they exit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&http_get(&http, "/api/fleet"), "\"state\":\"done\"") < 3
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }

    let dom = run_chromium(
        &browser,
        &dir,
        "dom",
        &["--dump-dom"],
        &format!("http://{http}/"),
    );
    let done_rows = count(&dom, "data-state=\"done\"><td>");
    let refused_rows = count(&dom, "data-state=\"refused\"><td>");
    println!("rendered: {done_rows} done rows, {refused_rows} refused rows");
    assert_eq!((done_rows, refused_rows), (3, 1), "{dom}");
    assert!(
        dom.contains("<div class=\"tile\" data-state=\"done\"><span class=\"n\">3</span>"),
        "the totals show 3 done:\n{dom}"
    );
    assert!(
        dom.contains("<div class=\"tile\" data-state=\"devices\"><span class=\"n\">4</span>"),
        "the totals show 4 devices:\n{dom}"
    );
    assert!(dom.contains("wrong-board"), "{dom}");
    assert!(
        dom.contains("<polyline"),
        "the progress plot is drawn:\n{dom}"
    );
    // The hostile version is text, not an element.
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"), "{dom}");
    assert!(!dom.contains("<img"), "device data became markup:\n{dom}");

    // One device's history, opened by the URL's fragment (as a click does).
    let page = format!("http://{http}/#000000000000bad0");
    let hist = run_chromium(&browser, &dir, "history", &["--dump-dom"], &page);
    let section = hist.split("id=\"history\"").nth(1).unwrap_or("");
    assert!(
        section.starts_with(" aria-label=\"device history\">")
            && section.contains("<td>refused</td>"),
        "the history of 000000000000bad0 is shown:\n{hist}"
    );

    let artifacts = bin_dir()
        .parent()
        .expect("target dir")
        .join("test-artifacts");
    fs::create_dir_all(&artifacts).expect("artifacts dir");
    let shot = artifacts.join("fleet-page.png");
    let _ = fs::remove_file(&shot);
    run_chromium(
        &browser,
        &dir,
        "shot",
        &[
            &format!("--screenshot={}", path_str(&shot)),
            "--window-size=1280,900",
            "--hide-scrollbars",
        ],
        &page,
    );
    let size = fs::metadata(&shot).map_or(0, |m| m.len());
    println!("screenshot: {} ({size} bytes)", shot.display());
    assert!(size > 10_000, "no screenshot at {}", shot.display());
    sender.kill();
}
