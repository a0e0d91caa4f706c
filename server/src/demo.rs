//! `firmcast demo`: a real multicast update of several agents on this
//! machine. It runs the same binaries an operator and a device would run —
//! `firmcast keygen`, `firmcast manifest`, `firmcast repair`, `firmcast send`
//! and N × `firmcast-agent` — over multicast on the loopback interface, each
//! agent writing a simulated NOR flash file, then checks every flash byte for
//! byte against the image and prints a summary. With `--ipv6` the same runs
//! over IPv6 in a user + network namespace of its own ([`crate::demo_ns`]).

use std::fs;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::demo_ns::{self, Lan6};

/// Where the demo's processes meet.
#[derive(Debug, Clone)]
pub struct DemoNet {
    /// Data group.
    pub group: SocketAddr,
    /// Repair group.
    pub repair_group: SocketAddr,
    /// Repair server's listen address.
    pub repair_listen: SocketAddr,
    /// Over IPv6, in a namespace of the demo's own ([`demo_ns`]).
    pub ipv6: bool,
}

impl DemoNet {
    /// The IPv4 defaults, on loopback.
    pub fn ipv4() -> DemoNet {
        let v4 = |a, b, c, d, port| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port);
        DemoNet {
            group: v4(239, 255, 77, 1, 7854),
            repair_group: v4(239, 255, 77, 2, 7855),
            repair_listen: v4(127, 0, 0, 1, 7855),
            ipv6: false,
        }
    }

    /// The IPv6 defaults: site-local scope groups, the sender on fd77::1.
    pub fn ipv6() -> DemoNet {
        let v6 = |ip: std::net::Ipv6Addr, port| SocketAddr::new(IpAddr::V6(ip), port);
        let group = |n| std::net::Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0, n);
        DemoNet {
            group: v6(group(0x77), 7854),
            repair_group: v6(group(0x78), 7855),
            repair_listen: v6(demo_ns::addr(1), 7855),
            ipv6: true,
        }
    }

    /// The sender's interface address.
    fn sender_ip(&self) -> IpAddr {
        if self.ipv6 {
            IpAddr::V6(demo_ns::addr(1))
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
    }

    /// The repair server's interface address: over IPv6 its listen address
    /// (the namespace holds it), else the sender's, loopback.
    fn repair_ip(&self) -> IpAddr {
        let ip = self.repair_listen.ip();
        if self.ipv6 && !ip.is_unspecified() {
            ip
        } else {
            self.sender_ip()
        }
    }

    /// Device `i`'s interface address: its own over IPv6, so the sender's
    /// table tells the devices apart by address.
    fn device_ip(&self, i: u32) -> IpAddr {
        match u16::try_from(0x100 + i) {
            Ok(n) if self.ipv6 => IpAddr::V6(demo_ns::addr(n)),
            _ => self.sender_ip(),
        }
    }

    /// Every address in the family of the demo.
    fn check(&self) -> Result<(), DemoError> {
        for (flag, a) in [
            ("--group", self.group),
            ("--repair-group", self.repair_group),
            ("--repair-listen", self.repair_listen),
        ] {
            if a.is_ipv6() != self.ipv6 {
                let want = if self.ipv6 {
                    "IPv6 with --ipv6"
                } else {
                    "IPv4 without --ipv6"
                };
                return err(format!("{flag} {a}: must be {want}"));
            }
        }
        Ok(())
    }
}

/// `program` started in `lan` when there is one, else on this host.
fn launch(lan: Option<&Lan6>, program: &Path) -> Command {
    match lan {
        Some(lan) => lan.command(program),
        None => Command::new(program),
    }
}

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Number of agents.
    pub devices: u32,
    /// Image size in MiB.
    pub size_mib: u32,
    /// Receive loss per agent, in permille (the agent's test option).
    pub loss_permille: u32,
    /// Carousel rate in bits per second.
    pub rate_bps: u64,
    /// Working directory; a fresh temp dir when `None`.
    pub dir: Option<PathBuf>,
    /// Keep the working directory afterwards.
    pub keep: bool,
    /// Groups, addresses and family.
    pub net: DemoNet,
    /// Print a JSON summary on stdout.
    pub json: bool,
}

/// Why the demo could not run.
#[derive(Debug)]
pub struct DemoError(pub String);

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DemoError {}

fn err<T>(msg: impl Into<String>) -> Result<T, DemoError> {
    Err(DemoError(msg.into()))
}

/// A child process, killed on drop, output in a log file.
struct Job {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    exit: Option<ExitStatus>,
    exited_after: Option<Duration>,
    /// Highest VmHWM (peak resident set, KiB) seen in /proc while it ran.
    peak_rss_kib: u64,
    /// Highest RssAnon (resident memory not backed by files: the process's own heap, stack, buffers).
    peak_anon_kib: u64,
}

impl Job {
    fn start(
        name: &str,
        mut cmd: Command,
        args: &[String],
        log_dir: &Path,
    ) -> Result<Job, DemoError> {
        let log = log_dir.join(format!("{name}.log"));
        let out = fs::File::create(&log)
            .map_err(|e| DemoError(format!("create {}: {e}", log.display())))?;
        let err_out = out
            .try_clone()
            .map_err(|e| DemoError(format!("log {}: {e}", log.display())))?;
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err_out)
            .spawn()
            .map_err(|e| DemoError(format!("start {name} ({cmd:?}): {e}")))?;
        Ok(Job {
            name: name.to_string(),
            child: Some(child),
            log,
            exit: None,
            exited_after: None,
            peak_rss_kib: 0,
            peak_anon_kib: 0,
        })
    }

    fn poll(&mut self, started: Instant) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Some(kib) = proc_status_kib(c.id(), "VmHWM:") {
                    self.peak_rss_kib = self.peak_rss_kib.max(kib);
                }
                if let Some(kib) = proc_status_kib(c.id(), "RssAnon:") {
                    self.peak_anon_kib = self.peak_anon_kib.max(kib);
                }
                if let Ok(Some(status)) = c.try_wait() {
                    self.exit = Some(status);
                    self.exited_after = Some(started.elapsed());
                }
            }
        }
        self.exit
    }

    fn output(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Ask it to stop (SIGTERM through kill(1)), then wait a little, then kill.
    fn stop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if self.exit.is_none() {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(c.id().to_string())
                    .status();
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline {
                    if let Ok(Some(status)) = c.try_wait() {
                        self.exit = Some(status);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                self.exit = c.wait().ok();
            }
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.exit.is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn sibling(name: &str) -> Result<PathBuf, DemoError> {
    let me = std::env::current_exe()
        .map_err(|e| DemoError(format!("cannot find own executable: {e}")))?;
    let dir = me.parent().map(Path::to_path_buf).unwrap_or_default();
    let p = dir.join(name);
    if p.exists() {
        Ok(p)
    } else {
        err(format!(
            "{name} not found next to {} — build it with `cargo build --release --workspace --bins`",
            me.display()
        ))
    }
}

fn run_self(firmcast: &Path, args: &[&str]) -> Result<String, DemoError> {
    let out = Command::new(firmcast)
        .args(args)
        .output()
        .map_err(|e| DemoError(format!("run {}: {e}", firmcast.display())))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return err(format!(
            "`firmcast {}` failed: {}",
            args.join(" "),
            text.trim()
        ));
    }
    Ok(text)
}

fn random_image(len: usize) -> Vec<u8> {
    let mut seed = [0u8; 8];
    if getrandom::getrandom(&mut seed).is_err() {
        seed = (std::process::id() as u64).to_le_bytes();
    }
    let mut rng = proto::rng::Rng::new(u64::from_le_bytes(seed));
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

fn mbit(bytes: u64, elapsed: Duration) -> String {
    let ms = elapsed.as_millis().max(1) as u64;
    format!("{:.1}", bytes as f64 * 8.0 / 1000.0 / ms as f64)
}

/// Run the demo; returns the process exit code (0 when every device verified).
pub fn run(opts: &DemoOptions) -> Result<i32, DemoError> {
    if opts.devices == 0 || opts.devices > 64 {
        return err("--devices must be between 1 and 64");
    }
    if opts.size_mib == 0 || opts.size_mib > 1024 {
        return err("--size must be between 1 and 1024 (MiB)");
    }
    if opts.loss_permille > 500 {
        return err("--loss must be at most 500 (permille)");
    }
    let net = &opts.net;
    net.check()?;
    let firmcast = sibling("firmcast")?;
    let agent = sibling("firmcast-agent")?;
    // Over IPv6 the processes share a namespace holding their addresses;
    // it ends when `lan` is dropped, after them (declared before the jobs);
    // made before the work dir, which a refusal would leave behind.
    let lan = if net.ipv6 {
        let mut addrs = vec![net.sender_ip(), net.repair_ip()];
        addrs.extend((0..opts.devices).map(|i| net.device_ip(i)));
        addrs.sort();
        addrs.dedup();
        let v6: Vec<_> = addrs
            .iter()
            .filter_map(|a| match a {
                IpAddr::V6(a) => Some(*a),
                IpAddr::V4(_) => None,
            })
            .collect();
        Some(Lan6::up(&v6).map_err(|e| DemoError(e.to_string()))?)
    } else {
        None
    };
    let dir = match &opts.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("firmcast-demo-{}", std::process::id())),
    };
    fs::create_dir_all(&dir).map_err(|e| DemoError(format!("create {}: {e}", dir.display())))?;
    // Agents running as root trust only files root alone can change
    // (R-LOCAL-1): set the modes, whatever the umask.
    set_mode(&dir, 0o755)?;
    let say = |s: &str| {
        if !opts.json {
            println!("{s}");
        }
    };
    say(&format!(
        "firmcast demo: {} devices, {} MiB image, {}‰ receive loss, {} Mbit/s on {} via {}{} (work dir {})",
        opts.devices,
        opts.size_mib,
        opts.loss_permille,
        opts.rate_bps / 1_000_000,
        net.group,
        net.sender_ip(),
        lan.as_ref()
            .map(|l| format!(" in {} of its own", l.kind()))
            .unwrap_or_default(),
        dir.display()
    ));

    // 1. Keys, image, signed manifest — with the real subcommands.
    let keys = dir.join("keys");
    if !keys.join("firmcast.key").exists() {
        run_self(&firmcast, &["keygen", "--out", &path_arg(&keys)])?;
    }
    let image_len = opts.size_mib as usize * 1024 * 1024;
    let image = random_image(image_len);
    let image_path = dir.join("fw.bin");
    fs::write(&image_path, &image)
        .map_err(|e| DemoError(format!("write {}: {e}", image_path.display())))?;
    let manifest_path = dir.join("fw.manifest");
    run_self(
        &firmcast,
        &[
            "manifest",
            "--image",
            &path_arg(&image_path),
            "--board",
            "demo,board",
            "--version",
            "2.0.0",
            "--key",
            &path_arg(&keys.join("firmcast.key")),
            "--out",
            &path_arg(&manifest_path),
        ],
    )?;
    say(&format!(
        "  signed {} ({} bytes) with {}",
        manifest_path.display(),
        image_len,
        keys.join("firmcast.key").display()
    ));

    // 2. Repair server, agents, then the sender.
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).map_err(|e| DemoError(format!("create {}: {e}", logs.display())))?;
    let ssm = mcast::is_ssm(net.group.ip());
    let mut repair_args: Vec<String> = vec![
        "repair".into(),
        "--image".into(),
        path_arg(&image_path),
        "--manifest".into(),
        path_arg(&manifest_path),
        "--listen".into(),
        net.repair_listen.to_string(),
        "--interface".into(),
        net.repair_ip().to_string(),
        "--group".into(),
        net.group.to_string(),
        "--repair-group".into(),
        net.repair_group.to_string(),
        "--duration".into(),
        "600".into(),
        "--json".into(),
    ];
    if ssm {
        repair_args.extend(["--source".into(), net.sender_ip().to_string()]);
    }
    let mut repair = Job::start(
        "repair",
        launch(lan.as_ref(), &firmcast),
        &repair_args,
        &logs,
    )?;
    let flash_size = (image_len as u64).div_ceil(65536) * 65536 + 4 * 65536;
    let mut agents = Vec::new();
    let mut targets = Vec::new();
    for i in 0..opts.devices {
        let target = dir.join(format!("device{i:02}.flash"));
        let _ = fs::remove_file(&target);
        let _ = fs::remove_file(dir.join(format!("device{i:02}.flash.sim")));
        let config = dir.join(format!("device{i:02}.toml"));
        let mut settings = vec![
            "board=demo,board".to_string(),
            "current_version=1.0.0".to_string(),
            format!("group={}", net.group),
            format!("repair_group={}", net.repair_group),
            format!("interface={}", net.device_ip(i)),
            format!("repair_server={}", net.repair_listen),
            format!("public_key={}", path_arg(&keys.join("firmcast.pub"))),
            format!("target=simnor:{}", path_arg(&target)),
            format!("target_size={flash_size}"),
            "boot_window_secs=30".to_string(),
            "window_blocks=8".to_string(),
            format!("device_id={}", 1000 + i),
            format!(
                "state_file={}",
                path_arg(&dir.join(format!("device{i:02}.state.json")))
            ),
        ];
        if ssm {
            // R-NET-1: the carousel's source; the repair group's is the
            // repair server's address by default.
            settings.push(format!("source={}", net.sender_ip()));
        }
        if opts.loss_permille > 0 {
            settings.push(format!("test.rx_loss_permille={}", opts.loss_permille));
            settings.push(format!("test.rx_loss_seed={}", 77 + i));
        }
        let text = crate::agent_config::render(&settings).map_err(|e| DemoError(e.to_string()))?;
        fs::write(&config, text)
            .map_err(|e| DemoError(format!("write {}: {e}", config.display())))?;
        set_mode(&config, 0o644)?;
        agents.push(Job::start(
            &format!("device{i:02}"),
            launch(lan.as_ref(), &agent),
            &["--config".into(), path_arg(&config), "--foreground".into()],
            &logs,
        )?);
        targets.push(target);
    }
    // Give the agents a moment to join before the first pass starts.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut send_args: Vec<String> = vec![
        "send".into(),
        "--image".into(),
        path_arg(&image_path),
        "--manifest".into(),
        path_arg(&manifest_path),
        "--group".into(),
        net.group.to_string(),
        "--repair-group".into(),
        net.repair_group.to_string(),
        "--interface".into(),
        net.sender_ip().to_string(),
        "--rate".into(),
        // `--rate` needs a unit (server/src/units.rs): exact in kbit/s.
        format!("{}.{:03}K", opts.rate_bps / 1000, opts.rate_bps % 1000),
        "--until-done".into(),
        opts.devices.to_string(),
        "--duration".into(),
        "600".into(),
        "--json".into(),
    ];
    if mcast::is_ssm(net.repair_group.ip()) {
        send_args.extend(["--repair-source".into(), net.repair_ip().to_string()]);
    }
    let mut sender = Job::start("sender", launch(lan.as_ref(), &firmcast), &send_args, &logs)?;

    // 3. Progress: devices finished, as they finish.
    let deadline = started + Duration::from_secs(600);
    let mut finished = 0;
    let mut last_line = Instant::now();
    while finished < agents.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(status) = sender.poll(started).filter(|s| !s.success()) {
            let last = sender.output();
            return Err(DemoError(format!(
                "the sender exited ({status}) before the devices finished: {}",
                last.lines().next().unwrap_or("no output")
            )));
        }
        let now_finished = agents
            .iter_mut()
            .map(|a| a.poll(started))
            .filter(Option::is_some)
            .count();
        if now_finished != finished || last_line.elapsed() > Duration::from_secs(2) {
            finished = now_finished;
            last_line = Instant::now();
            let written: u64 = targets.iter().map(|t| flash_progress(t, &image)).sum();
            say(&format!(
                "  {:>6.1} s  devices finished {}/{}  blocks on flash {}%",
                started.elapsed().as_secs_f64(),
                finished,
                agents.len(),
                written * 100 / (image_len as u64 * targets.len() as u64).max(1)
            ));
        }
    }
    let wall = started.elapsed();
    sender.stop();
    repair.stop();

    // 4. Verify every device byte for byte.
    let mut rows = Vec::new();
    let mut all_ok = true;
    for (job, target) in agents.iter_mut().zip(&targets) {
        job.stop();
        let code = job.exit.and_then(|s| s.code()).unwrap_or(-1);
        let identical = fs::read(target)
            .map(|f| f.len() >= image.len() && f[..image.len()] == image[..])
            .unwrap_or(false);
        // firmcast-agent exits 10 once it has installed an update (0: nothing to do).
        all_ok &= identical && code == 10;
        rows.push(Row {
            device: job.name.clone(),
            exit: code,
            took: job.exited_after.unwrap_or(wall),
            identical,
            peak_rss_kib: job.peak_rss_kib,
            peak_anon_kib: job.peak_anon_kib,
        });
    }
    let repair_bytes = json_field(&repair.output(), "bytes_sent").unwrap_or(0);
    let sender_bytes = json_field(&sender.output(), "bytes").unwrap_or(0);
    if opts.json {
        let devices: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{{\"device\":\"{}\",\"exit\":{},\"seconds\":{:.3},\"identical\":{},\"peak_rss_kib\":{},\"peak_anon_kib\":{}}}",
                    r.device,
                    r.exit,
                    r.took.as_secs_f64(),
                    r.identical,
                    r.peak_rss_kib,
                    r.peak_anon_kib
                )
            })
            .collect();
        println!(
            "{{\"devices\":{},\"size_bytes\":{},\"loss_permille\":{},\"wall_seconds\":{:.3},\"sender_bytes\":{},\"repair_bytes\":{},\"all_identical\":{},\"results\":[{}]}}",
            opts.devices,
            image_len,
            opts.loss_permille,
            wall.as_secs_f64(),
            sender_bytes,
            repair_bytes,
            all_ok,
            devices.join(",")
        );
    } else {
        println!("  device      exit   time     peak RSS   peak anon   flash");
        for r in &rows {
            println!(
                "  {:<10}  {:>4}  {:>6.2} s  {:>6} KiB  {:>6} KiB  {}",
                r.device,
                r.exit,
                r.took.as_secs_f64(),
                r.peak_rss_kib,
                r.peak_anon_kib,
                if r.identical {
                    "identical to image"
                } else {
                    "DIFFERS"
                }
            );
        }
        println!(
            "summary: {}/{} devices verified byte for byte, {} MiB each, {:.2} s wall, {} Mbit/s goodput per device; sender sent {:.2} × image, repair {:.3} × image",
            rows.iter().filter(|r| r.identical).count(),
            rows.len(),
            opts.size_mib,
            wall.as_secs_f64(),
            mbit(image_len as u64, wall),
            sender_bytes as f64 / image_len as f64,
            repair_bytes as f64 / image_len as f64,
        );
        if !all_ok {
            println!("logs: {}", logs.display());
        }
    }
    if !opts.keep && all_ok && opts.dir.is_none() {
        let _ = fs::remove_dir_all(&dir);
    } else if !opts.json {
        println!("work dir kept: {}", dir.display());
    }
    Ok(if all_ok { 0 } else { 1 })
}

/// One device's outcome.
struct Row {
    device: String,
    exit: i32,
    took: Duration,
    identical: bool,
    peak_rss_kib: u64,
    peak_anon_kib: u64,
}

/// A KiB field (`VmHWM:`, `RssAnon:`) of a running process's /proc status.
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Bytes of `target` that already equal the image, sampled per 64 KiB block.
fn flash_progress(target: &Path, image: &[u8]) -> u64 {
    let Ok(flash) = fs::read(target) else {
        return 0;
    };
    image
        .chunks(65536)
        .enumerate()
        .filter(|(i, block)| flash.get(i * 65536..i * 65536 + block.len()) == Some(*block))
        .map(|(_, b)| b.len() as u64)
        .sum()
}

/// The first integer value of `"key":` in a JSON text (the children's --json summaries).
fn json_field(text: &str, key: &str) -> Option<u64> {
    let needle = format!("\"{key}\":");
    let at = text.rfind(&needle)? + needle.len();
    let digits: String = text[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Set `path`'s permission bits.
fn set_mode(path: &Path, mode: u32) -> Result<(), DemoError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| DemoError(format!("chmod {mode:o} {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_field_reads_the_last_summary() {
        let text = "log line\n{\"a\":1,\"bytes_sent\": 4096}\n";
        assert_eq!(json_field(text, "bytes_sent"), Some(4096));
        assert_eq!(json_field(text, "missing"), None);
    }

    #[test]
    fn progress_counts_matching_blocks_only() {
        let dir = std::env::temp_dir().join(format!("firmcast-demo-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        let image = random_image(3 * 65536 + 10);
        let mut flash = vec![0xFFu8; image.len()];
        flash[65536..131072].copy_from_slice(&image[65536..131072]);
        let t = dir.join("f");
        fs::write(&t, &flash).expect("write");
        assert_eq!(flash_progress(&t, &image), 65536);
        let _ = fs::remove_dir_all(&dir);
    }
}
