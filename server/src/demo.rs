//! `firmcast demo`: a real multicast update of several agents on this
//! machine. It runs the same binaries an operator and a device would run —
//! `firmcast keygen`, `firmcast manifest`, `firmcast repair`, `firmcast send`
//! and N × `firmcast-agent` — over multicast on the loopback interface, each
//! agent writing a simulated NOR flash file, then checks every flash byte for
//! byte against the image and prints a summary.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
    /// Data group.
    pub group: String,
    /// Repair group.
    pub repair_group: String,
    /// Repair server's listen address.
    pub repair_listen: String,
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
        program: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> Result<Job, DemoError> {
        let log = log_dir.join(format!("{name}.log"));
        let out = fs::File::create(&log)
            .map_err(|e| DemoError(format!("create {}: {e}", log.display())))?;
        let err_out = out
            .try_clone()
            .map_err(|e| DemoError(format!("log {}: {e}", log.display())))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err_out)
            .spawn()
            .map_err(|e| DemoError(format!("start {}: {e}", program.display())))?;
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
    let firmcast = sibling("firmcast")?;
    let agent = sibling("firmcast-agent")?;
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
        "firmcast demo: {} devices, {} MiB image, {}‰ receive loss, {} Mbit/s on {} via 127.0.0.1 (work dir {})",
        opts.devices,
        opts.size_mib,
        opts.loss_permille,
        opts.rate_bps / 1_000_000,
        opts.group,
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
    let mut repair = Job::start(
        "repair",
        &firmcast,
        &[
            "repair".into(),
            "--image".into(),
            path_arg(&image_path),
            "--manifest".into(),
            path_arg(&manifest_path),
            "--listen".into(),
            opts.repair_listen.clone(),
            "--interface".into(),
            "127.0.0.1".into(),
            "--group".into(),
            opts.group.clone(),
            "--repair-group".into(),
            opts.repair_group.clone(),
            "--duration".into(),
            "600".into(),
            "--json".into(),
        ],
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
            format!("group={}", opts.group),
            format!("repair_group={}", opts.repair_group),
            "interface=127.0.0.1".to_string(),
            format!("repair_server={}", opts.repair_listen),
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
            &agent,
            &["--config".into(), path_arg(&config), "--foreground".into()],
            &logs,
        )?);
        targets.push(target);
    }
    // Give the agents a moment to join before the first pass starts.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut sender = Job::start(
        "sender",
        &firmcast,
        &[
            "send".into(),
            "--image".into(),
            path_arg(&image_path),
            "--manifest".into(),
            path_arg(&manifest_path),
            "--group".into(),
            opts.group.clone(),
            "--repair-group".into(),
            opts.repair_group.clone(),
            "--interface".into(),
            "127.0.0.1".into(),
            "--rate".into(),
            // `--rate` needs a unit (server/src/units.rs): exact in kbit/s.
            format!("{}.{:03}K", opts.rate_bps / 1000, opts.rate_bps % 1000),
            "--until-done".into(),
            opts.devices.to_string(),
            "--duration".into(),
            "600".into(),
            "--json".into(),
        ],
        &logs,
    )?;

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
