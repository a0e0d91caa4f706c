//! Harness for the cross-crate scenarios in `tests/tests/`: locate the real
//! binaries, make scratch directories, start processes that are ended (by
//! PID, through their `Child` handle) when the test lets go of them, pick
//! multicast groups and ports that no other test uses, and write agent configs.
//!
//! Everything here sends only to 127.0.0.1 and to 239.x groups on the
//! loopback interface, or inside a namespace a test made ([`lan6`], [`netns`]).

pub mod lan6;
pub mod netns;
pub mod qemu;
pub mod routed;
pub mod uboot_boot;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use firmcast_agent::config::writer::{AgentToml, TomlValue};

/// The directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir");
    let dir = if deps.ends_with("deps") {
        deps.parent().expect("profile dir")
    } else {
        deps
    };
    dir.to_path_buf()
}

/// Path of a workspace binary; fails with a clear message if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the integration tests",
        p.display()
    );
    p
}

/// A scratch directory, removed on drop unless `FIRMCAST_KEEP_TMP` is set.
pub struct Scratch {
    path: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Scratch {
    /// A new empty directory under the system temp dir.
    pub fn new(label: &str) -> Scratch {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("firmcast-it-{label}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create scratch dir");
        // Agents run as root in CI and trust only what root alone can change
        // (R-LOCAL-1): fix the modes whatever the umask.
        set_mode(&path, 0o755);
        Scratch { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("FIRMCAST_KEEP_TMP").is_none() && !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A started process with its output captured to files; killed on drop.
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Start `program args…`, stdout and stderr appended to `dir/<name>.log`.
    pub fn start(name: &str, program: &Path, args: &[&str], dir: &Path) -> Proc {
        Proc::spawn(name, Command::new(program), args, dir)
    }

    /// [`Proc::start`] with a prepared command (one that enters a
    /// namespace first, [`lan6`]).
    pub fn spawn(name: &str, mut cmd: Command, args: &[&str], dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log");
        let err = out.try_clone().expect("clone log handle");
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Wait up to `timeout` for it to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return None,
            }
        }
    }

    /// Wait for it to exit and return its exit code; panics with its output on timeout.
    pub fn expect_exit(&mut self, timeout: Duration) -> i32 {
        match self.wait(timeout) {
            Some(status) => status.code().unwrap_or(-1),
            None => {
                self.kill();
                panic!(
                    "{} did not exit within {timeout:?}; output:\n{}",
                    self.name,
                    self.output()
                );
            }
        }
    }

    /// Wait until its output contains `needle` (or it exits, or time runs out).
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.output().contains(needle) {
                return true;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return self.output().contains(needle);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Ask it to stop (SIGTERM by PID: the tools print their summary) and
    /// return its exit code; panics with its output after `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> i32 {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        self.expect_exit(timeout)
    }

    /// End it now (SIGKILL, like a power cut) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Multicast groups and ports for one test, disjoint from other tests in the
/// same run (keyed on the test's number and the process id).
#[derive(Debug, Clone)]
pub struct Net {
    /// Data group `239.255.A.B:port`.
    pub group: String,
    /// Repair group.
    pub repair_group: String,
    /// Repair server's unicast listen address on 127.0.0.1.
    pub repair_listen: String,
}

impl Net {
    /// Addresses for test number `n` (0..=99).
    pub fn for_test(n: u32) -> Net {
        let pid = std::process::id();
        let base = 20_000 + (pid % 300) * 100 + n * 3 % 100;
        let a = 1 + (pid % 200) as u8;
        Net {
            group: format!("239.255.{a}.{}:{}", 2 * n + 1, base),
            repair_group: format!("239.255.{a}.{}:{}", 2 * n + 2, base + 1),
            repair_listen: format!("127.0.0.1:{}", base + 2),
        }
    }
}

/// Deterministic pseudo-random bytes (SplitMix64).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A signed image ready to send: keys, image, manifest in a scratch dir.
pub struct Release {
    /// Image file.
    pub image: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Signed manifest file.
    pub manifest: PathBuf,
    /// Public key file.
    pub public_key: PathBuf,
}

/// Run a command; panic with its output unless it exits 0.
pub fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what}: {cmd:?} failed ({}):\n{text}",
        out.status
    );
    text
}

/// Run `firmcast` with `args`; panics with its output unless it exits 0.
pub fn firmcast_ok(args: &[&str]) -> String {
    run_ok(Command::new(bin("firmcast")).args(args), "firmcast")
}

/// Keys (in `dir/keys`), a random image of `len` bytes and its signed manifest.
pub fn release(dir: &Scratch, len: usize, board: &str, version: &str, seed: u64) -> Release {
    release_with(dir, len, board, version, seed, &[])
}

/// [`release`] with more `firmcast manifest` arguments (`--format 1`,
/// `--min-version V`).
pub fn release_with(
    dir: &Scratch,
    len: usize,
    board: &str,
    version: &str,
    seed: u64,
    extra: &[&str],
) -> Release {
    let keys = dir.join("keys");
    if !keys.join("firmcast.key").exists() {
        firmcast_ok(&["keygen", "--out", path_str(&keys)]);
        set_mode(&keys, 0o755);
    }
    let image = dir.join(&format!("fw-{version}-{seed}.bin"));
    let bytes = random_bytes(len, seed);
    fs::write(&image, &bytes).expect("write image");
    let manifest = dir.join(&format!("fw-{version}-{seed}.manifest"));
    let key = keys.join("firmcast.key");
    let mut args = vec![
        "manifest",
        "--image",
        path_str(&image),
        "--board",
        board,
        "--version",
        version,
        "--key",
        path_str(&key),
        "--out",
        path_str(&manifest),
    ];
    args.extend_from_slice(extra);
    firmcast_ok(&args);
    Release {
        image,
        bytes,
        manifest,
        public_key: keys.join("firmcast.pub"),
    }
}

/// A path as `&str` (test paths are ASCII).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Set `path`'s permission bits.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Settings for one agent's config file.
pub struct AgentSpec<'a> {
    /// Config and target file names are derived from this.
    pub name: &'a str,
    /// Board id.
    pub board: &'a str,
    /// Running version.
    pub current_version: &'a str,
    /// Public key file.
    pub public_key: &'a Path,
    /// Boot window.
    pub boot_window_secs: u32,
    /// Test option: receive loss in permille.
    pub rx_loss_permille: u32,
    /// Test option: delay after each block write.
    pub block_delay_ms: u32,
    /// Target size for the simulated NOR flash.
    pub target_size: u64,
    /// The data group's source, for a source-specific group (R-NET-1).
    pub source: Option<&'a str>,
}

impl<'a> AgentSpec<'a> {
    /// Defaults for a device of board `acme,rt1` running 1.0.0.
    pub fn new(name: &'a str, public_key: &'a Path, target_size: u64) -> Self {
        AgentSpec {
            name,
            board: "acme,rt1",
            current_version: "1.0.0",
            public_key,
            boot_window_secs: 20,
            rx_loss_permille: 0,
            block_delay_ms: 0,
            target_size,
            source: None,
        }
    }
}

/// Write an agent config for `spec` on `net`; returns (config path, target path).
pub fn agent_config(dir: &Scratch, net: &Net, spec: &AgentSpec<'_>) -> (PathBuf, PathBuf) {
    agent_config_on(dir, net, spec, "127.0.0.1")
}

/// [`agent_config`] with the agent's `interface` key set to `interface`.
pub fn agent_config_on(
    dir: &Scratch,
    net: &Net,
    spec: &AgentSpec<'_>,
    interface: &str,
) -> (PathBuf, PathBuf) {
    let target = dir.join(&format!("{}.flash", spec.name));
    let config = dir.join(&format!("{}.toml", spec.name));
    let state = dir.join(&format!("{}.state.json", spec.name));
    let mut t = AgentToml::new();
    let set = |t: &mut AgentToml, k: &str, v: TomlValue| {
        t.set(k, v).unwrap_or_else(|e| panic!("{e}"));
    };
    set(&mut t, "board", spec.board.into());
    set(&mut t, "current_version", spec.current_version.into());
    set(&mut t, "group", net.group.to_string().into());
    set(&mut t, "repair_group", net.repair_group.to_string().into());
    set(&mut t, "interface", interface.into());
    if let Some(source) = spec.source {
        set(&mut t, "source", source.into());
    }
    set(
        &mut t,
        "repair_server",
        net.repair_listen.to_string().into(),
    );
    set(&mut t, "public_key", path_str(spec.public_key).into());
    set(
        &mut t,
        "target",
        format!("simnor:{}", path_str(&target)).into(),
    );
    set(&mut t, "target_size", spec.target_size.into());
    set(&mut t, "boot_window_secs", spec.boot_window_secs.into());
    set(&mut t, "window_blocks", 8u32.into());
    set(&mut t, "stall_timeout_secs", 30u32.into());
    set(&mut t, "state_file", path_str(&state).into());
    if spec.rx_loss_permille > 0 || spec.block_delay_ms > 0 {
        set(
            &mut t,
            "test.rx_loss_permille",
            spec.rx_loss_permille.into(),
        );
        set(&mut t, "test.rx_loss_seed", loss_seed(spec.name).into());
        set(&mut t, "test.block_delay_ms", spec.block_delay_ms.into());
    }
    fs::write(&config, t.to_string()).expect("write agent config");
    set_mode(&config, 0o644);
    (config, target)
}

/// A receive-loss seed of its own for each agent name, so the agents of one
/// test lose different datagrams (the seed was the name's length: agents
/// `loss20-0` and `loss20-1` lost alike). Below 2^63, as TOML integers are.
fn loss_seed(name: &str) -> u64 {
    let h = name
        .bytes()
        .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    h >> 1
}

/// Start an agent in the foreground with `config`.
pub fn start_agent(dir: &Scratch, name: &str, config: &Path) -> Proc {
    Proc::start(
        name,
        &bin("firmcast-agent"),
        &["--config", path_str(config), "--foreground", "--verbose"],
        dir.path(),
    )
}

/// Start an agent for `spec` and wait until it listens (so a sender started
/// next reaches it from the first datagram); its process and flash file.
pub fn start_listening_agent(dir: &Scratch, net: &Net, spec: &AgentSpec<'_>) -> (Proc, PathBuf) {
    let (config, target) = agent_config(dir, net, spec);
    let mut agent = start_agent(dir, spec.name, &config);
    assert!(
        agent.wait_for_output("listening", Duration::from_secs(10)),
        "{} never listened:\n{}",
        spec.name,
        agent.output()
    );
    (agent, target)
}

/// The arguments of `firmcast repair` for `rel` on `net`, sending group
/// repairs from `interface`.
pub fn repair_args<'a>(net: &'a Net, rel: &'a Release, interface: &'a str) -> Vec<&'a str> {
    vec![
        "repair",
        "--image",
        path_str(&rel.image),
        "--manifest",
        path_str(&rel.manifest),
        "--listen",
        &net.repair_listen,
        "--interface",
        interface,
        "--repair-group",
        &net.repair_group,
    ]
}

/// Start a repair server for `rel` on `net`.
pub fn start_repair(dir: &Scratch, net: &Net, rel: &Release, name: &str) -> Proc {
    let mut args = repair_args(net, rel, "127.0.0.1");
    args.extend_from_slice(&["--duration", "120"]);
    Proc::start(name, &bin("firmcast"), &args, dir.path())
}

/// The arguments of `firmcast send` for `rel` to `group` from `interface`.
pub fn send_args<'a>(rel: &'a Release, group: &'a str, interface: &'a str) -> Vec<&'a str> {
    vec![
        "send",
        "--image",
        path_str(&rel.image),
        "--manifest",
        path_str(&rel.manifest),
        "--group",
        group,
        "--interface",
        interface,
    ]
}

/// Start a sender for `rel` on `net` with extra arguments (stop conditions, rate).
pub fn start_sender(dir: &Scratch, net: &Net, rel: &Release, name: &str, extra: &[&str]) -> Proc {
    let mut args = send_args(rel, &net.group, "127.0.0.1");
    args.extend_from_slice(extra);
    Proc::start(name, &bin("firmcast"), &args, dir.path())
}

/// `true` when the first `image.len()` bytes of `target` equal `image`.
pub fn target_holds(target: &Path, image: &[u8]) -> bool {
    match fs::read(target) {
        Ok(flash) => flash.len() >= image.len() && flash[..image.len()] == *image,
        Err(_) => false,
    }
}

/// `true` when `target` does not exist or holds only erased bytes (0xFF).
pub fn target_untouched(target: &Path) -> bool {
    match fs::read(target) {
        Ok(flash) => flash.iter().all(|b| *b == 0xFF),
        Err(_) => true,
    }
}

/// The agent's "resume: K of N blocks already on flash[; M more were already
/// there when received before the scan reached them]" line → (K + M, N): every
/// block this boot found on flash. The scan runs beside receiving (R-RES-2), so
/// how a boot's finds split between K and M depends on timing; their sum does not.
pub fn resume_count(log: &str) -> Option<(u32, u32)> {
    let line = log
        .lines()
        .find(|l| l.contains("resume:") && l.contains("already on flash"))?;
    let after = &line[line.find("resume:")? + "resume:".len()..];
    let mut words = after.split_whitespace();
    let scanned: u32 = words.next()?.parse().ok()?;
    let _of = words.next()?;
    let n = words.next()?.parse().ok()?;
    let received_first = match after.find(" more were already there when received") {
        Some(end) => after[..end].rsplit(' ').next()?.parse().ok()?,
        None => 0,
    };
    Some((scanned + received_first, n))
}

/// The image id a sender announced in its start-up line ("... image id
/// HEX) ..."), waiting up to 20 s for it.
pub fn sender_image_id(sender: &mut Proc) -> [u8; 8] {
    assert!(
        sender.wait_for_output("image id ", Duration::from_secs(20)),
        "sender did not start:\n{}",
        sender.output()
    );
    let out = sender.output();
    let hex = out
        .split("image id ")
        .nth(1)
        .and_then(|r| r.get(..16))
        .expect("image id");
    let mut id = [0u8; 8];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex image id");
    }
    id
}

/// `send` arguments that make the sender its own repair server on `net`
/// (devices send it NACKs and Status at `net.repair_listen`).
pub fn inline_repair_args(net: &Net) -> [&str; 4] {
    [
        "--repair-listen",
        &net.repair_listen,
        "--repair-group",
        &net.repair_group,
    ]
}

/// GET `path` from an HTTP server at `addr` (the fleet page); the body,
/// empty if it cannot be reached.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The `ADDR:PORT` of the fleet page a firmcast process announced
/// ("fleet page at http://ADDR:PORT/"), waiting up to 20 s for it.
pub fn fleet_page_addr(p: &mut Proc) -> String {
    assert!(
        p.wait_for_output("fleet page at http://", Duration::from_secs(20)),
        "{} serves no fleet page:\n{}",
        p.name,
        p.output()
    );
    p.output()
        .split("fleet page at http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("page address")
        .to_string()
}

/// A Status report from `device_id` in `state`, as tests forge them: no
/// blocks, no reason, no write rate; set other fields with `..` on it.
pub fn status_report(
    device_id: u64,
    state: proto::wire::DeviceState,
    version: &str,
) -> proto::wire::Status<'_> {
    proto::wire::Status {
        device_id,
        state,
        blocks_done: 0,
        blocks_total: 0,
        current_version: version,
        reason: proto::wire::Reason::None,
        write_kbps: 0,
        window_free: proto::wire::WINDOW_FREE_NONE,
    }
}

/// `st` as an unsigned Status datagram of image `image` (session 1).
pub fn status_datagram(image: proto::wire::ImageId, st: proto::wire::Status<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; proto::wire::MAX_DATAGRAM];
    let frame = proto::wire::Frame::Status(st);
    let n = proto::wire::encode(1, image, 0, &frame, &mut buf).expect("encode a Status");
    buf.truncate(n);
    buf
}

#[cfg(test)]
mod tests {
    use super::resume_count;

    #[test]
    fn resume_count_adds_blocks_found_before_the_scan_reached_them() {
        let log = "   2.272 INFO  resume: 31 of 48 blocks already on flash; 7 more were \
                   already there when received before the scan reached them\n";
        assert_eq!(resume_count(log), Some((38, 48)));
        let plain = "0.1 INFO  resume: 5 of 48 blocks already on flash; 2 unreadable\n";
        assert_eq!(resume_count(plain), Some((5, 48)));
        assert_eq!(resume_count("0.1 INFO  manifest accepted\n"), None);
    }
}
