//! The default device id (R-LOCAL-6): unique per device without
//! configuration, so two identical boxes (same hostname, same target) are
//! two records in the operator's fleet table, not one.
//!
//! ```text
//!  device_id (config)  ─▶ as configured
//!  device_id_file      ─▶ FNV-1a-64 of "file:"       + its first line + "/" + target
//!  /etc/machine-id     ─▶ FNV-1a-64 of "machine-id:" + the id         + "/" + target
//!  MAC of interface    ─▶ FNV-1a-64 of "mac:"        + the MAC        + "/" + target
//!  otherwise (a guess) ─▶ FNV-1a-64 of hostname + "/" + target, with a warning
//! ```
//!
//! The target is in every hash so that several agents on one host (one per
//! target) differ; a relative `file:`/`simnor:`/`simnand:` path is made
//! absolute first ([`target_key`]), so agents started in different
//! directories with the same relative spec (different files) differ too.
//! [`derive()`] is pure; [`HostFacts::read`] gathers its inputs.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Where `/etc/machine-id` is read from.
pub const MACHINE_ID_PATH: &str = "/etc/machine-id";

/// The target as the id hashes it: a relative path of a path-based scheme
/// joined to `cwd` (where the agent opens it), anything else as written.
pub fn target_key(target: &str, cwd: &Path) -> String {
    use flasher::TargetSpec::{File, SimNand, SimNor};
    match flasher::TargetSpec::parse(target) {
        Some(spec @ (File(p) | SimNor(p) | SimNand(p))) if p.is_relative() => {
            format!("{}:{}", spec.scheme(), cwd.join(p).display())
        }
        _ => target.to_string(),
    }
}

/// FNV-1a, 64 bit.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The last-resort id: FNV-1a-64 of `hostname + "/" + target` (what every
/// device got before R-LOCAL-6; identical boxes collide).
pub fn hostname_device_id(hostname: &str, target: &str) -> u64 {
    fnv1a64(format!("{hostname}/{target}").as_bytes())
}

/// Where the device id came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSource {
    /// `device_id` in the config.
    Configured,
    /// `device_id_file`.
    File(PathBuf),
    /// `/etc/machine-id`.
    MachineId,
    /// The MAC address of this interface.
    Mac {
        /// Interface name.
        interface: String,
        /// Its MAC.
        mac: String,
    },
    /// Hostname and target: identical devices collide.
    Guessed,
}

impl IdSource {
    /// Whether the id had to be guessed (and `--check-config` warns).
    pub fn is_guess(&self) -> bool {
        *self == IdSource::Guessed
    }
}

impl fmt::Display for IdSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdSource::Configured => f.write_str("configured"),
            IdSource::File(p) => write!(f, "from device_id_file {}", p.display()),
            IdSource::MachineId => write!(f, "from {MACHINE_ID_PATH}"),
            IdSource::Mac { interface, mac } => write!(f, "from the MAC {mac} of {interface}"),
            IdSource::Guessed => f.write_str(
                "GUESSED from hostname/target: identical devices get the same id; set device_id_file or device_id",
            ),
        }
    }
}

/// A machine id worth using: 32 hex digits, not all zero (systemd writes
/// `uninitialized` before first boot completes).
fn usable_machine_id(s: &str) -> Option<&str> {
    let s = s.trim();
    (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0'))
        .then_some(s)
}

/// A MAC worth using: six colon-separated octets, neither all zero nor
/// broadcast.
fn usable_mac(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let octets: Vec<&str> = s.split(':').collect();
    let ok = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
    (ok && s != "00:00:00:00:00:00" && s != "ff:ff:ff:ff:ff:ff").then_some(s)
}

/// The inputs of [`derive()`] for the default id (no `device_id` configured).
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// `device_id_file` and the first line read from it.
    pub file: Option<(&'a Path, &'a str)>,
    /// The content of `/etc/machine-id`, if readable.
    pub machine_id: Option<&'a str>,
    /// (interface name, MAC) of the configured interface.
    pub mac: Option<(&'a str, &'a str)>,
    /// This host's name.
    pub hostname: &'a str,
    /// The target spec.
    pub target: &'a str,
}

/// Why no device id could be derived: the file at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceIdError {
    /// The first line of this `device_id_file` is empty.
    EmptyFile(std::path::PathBuf),
}

impl std::fmt::Display for DeviceIdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceIdError::EmptyFile(path) => {
                write!(f, "first line of {} is empty", path.display())
            }
        }
    }
}

impl std::error::Error for DeviceIdError {}

// The config error that reports it (key `device_id_file`) carries a message.
impl From<DeviceIdError> for String {
    fn from(e: DeviceIdError) -> String {
        e.to_string()
    }
}

/// The default device id and where it came from (see the module docs). A
/// `device_id_file` whose first line is empty is an error: it was asked for.
pub fn derive(i: Inputs<'_>) -> Result<(u64, IdSource), DeviceIdError> {
    let target = i.target;
    if let Some((path, line)) = i.file {
        let line = line.trim();
        if line.is_empty() {
            return Err(DeviceIdError::EmptyFile(path.to_path_buf()));
        }
        let id = fnv1a64(format!("file:{line}/{target}").as_bytes());
        return Ok((id, IdSource::File(path.to_path_buf())));
    }
    if let Some(m) = i.machine_id.and_then(usable_machine_id) {
        let id = fnv1a64(format!("machine-id:{}/{target}", m.to_ascii_lowercase()).as_bytes());
        return Ok((id, IdSource::MachineId));
    }
    if let Some((name, mac)) = i.mac {
        if let Some(mac) = usable_mac(mac) {
            let id = fnv1a64(format!("mac:{mac}/{target}").as_bytes());
            return Ok((
                id,
                IdSource::Mac {
                    interface: name.to_string(),
                    mac,
                },
            ));
        }
    }
    Ok((hostname_device_id(i.hostname, target), IdSource::Guessed))
}

/// One network interface: name, IPv4 addresses, MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// e.g. `eth0`.
    pub name: String,
    /// Its IPv4 addresses.
    pub addrs: Vec<Ipv4Addr>,
    /// `/sys/class/net/NAME/address`.
    pub mac: String,
}

/// The interface whose MAC names the device: the one holding `interface`,
/// or (for `0.0.0.0`) the first by name with a usable MAC, loopback aside.
pub fn pick_link(links: &[Link], interface: Ipv4Addr) -> Option<&Link> {
    if interface.is_unspecified() {
        let mut usable: Vec<&Link> = links
            .iter()
            .filter(|l| l.name != "lo" && usable_mac(&l.mac).is_some())
            .collect();
        usable.sort_by(|a, b| a.name.cmp(&b.name));
        usable.first().copied()
    } else {
        links.iter().find(|l| l.addrs.contains(&interface))
    }
}

/// What the host says about itself (read once, at config load).
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// Hostname.
    pub hostname: String,
    /// `/etc/machine-id`.
    pub machine_id: Option<String>,
    /// Interfaces with their MACs.
    pub links: Vec<Link>,
    /// `--check-config --lint`: this is not the device (the build host), so
    /// the device's own files (version, keys, id file) are not read.
    pub lint: bool,
}

impl HostFacts {
    /// Only a hostname (tests, and hosts that offer nothing better).
    pub fn hostname_only(hostname: &str) -> Self {
        HostFacts {
            hostname: hostname.to_string(),
            ..HostFacts::default()
        }
    }

    /// Read hostname, machine id and interfaces from this host.
    pub fn read() -> Self {
        HostFacts {
            hostname: hostname(),
            machine_id: std::fs::read_to_string(MACHINE_ID_PATH).ok(),
            links: links(),
            lint: false,
        }
    }
}

/// This host's name (from /proc; `localhost` when unknown).
pub fn hostname() -> String {
    for p in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(s) = std::fs::read_to_string(p) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    "localhost".to_string()
}

/// Interfaces from getifaddrs (IPv4 addresses) and /sys/class/net (MACs).
fn links() -> Vec<Link> {
    let mut out: Vec<Link> = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let mac = std::fs::read_to_string(entry.path().join("address")).unwrap_or_default();
        out.push(Link {
            name,
            addrs: Vec::new(),
            mac: mac.trim().to_string(),
        });
    }
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(v4) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) else {
                continue;
            };
            if let Some(l) = out.iter_mut().find(|l| l.name == a.interface_name) {
                l.addrs.push(v4.ip());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MID: &str = "4c4c4544004a3510804cb4c04f4b3232\n";

    fn inputs<'a>(target: &'a str) -> Inputs<'a> {
        Inputs {
            file: None,
            machine_id: None,
            mac: None,
            hostname: "router",
            target,
        }
    }

    /// R-LOCAL-6: two identical boxes (same hostname, same target) differ by
    /// their machine id or MAC; only a host offering neither is a guess.
    #[test]
    fn identical_devices_get_different_ids() {
        let t = "mtd:firmware";
        let a = derive(Inputs {
            machine_id: Some(MID),
            ..inputs(t)
        })
        .expect("a");
        let b = derive(Inputs {
            machine_id: Some("0f0e0d0c0b0a09080706050403020100"),
            ..inputs(t)
        })
        .expect("b");
        assert_eq!(a.1, IdSource::MachineId);
        assert_ne!(a.0, b.0, "same hostname and target, different machine ids");
        let c = derive(Inputs {
            mac: Some(("eth0", "02:00:00:00:00:01")),
            ..inputs(t)
        })
        .expect("c");
        let d = derive(Inputs {
            mac: Some(("eth0", "02:00:00:00:00:02")),
            ..inputs(t)
        })
        .expect("d");
        assert!(matches!(&c.1, IdSource::Mac { interface, .. } if interface == "eth0"));
        assert_ne!(c.0, d.0, "same hostname and target, different MACs");
        println!(
            "two boxes named router with target {t}: ids {:016x} / {:016x} (machine-id), {:016x} / {:016x} (MAC); before: both {:016x}",
            a.0,
            b.0,
            c.0,
            d.0,
            hostname_device_id("router", t)
        );
        let g = derive(inputs(t)).expect("guess");
        assert!(g.1.is_guess());
        assert_eq!(g.0, hostname_device_id("router", t));
        // Several agents on one host still differ per target.
        let e = derive(Inputs {
            machine_id: Some(MID),
            ..inputs("mtd:other")
        })
        .expect("e");
        assert_ne!(a.0, e.0);
    }

    #[test]
    fn agents_in_different_directories_with_one_relative_target_spec_differ() {
        let spec = "simnor:flash.img";
        let keys: Vec<String> = ["/srv/a", "/srv/b", "/srv/c"]
            .iter()
            .map(|d| target_key(spec, Path::new(d)))
            .collect();
        let ids: Vec<u64> = keys
            .iter()
            .map(|k| {
                derive(Inputs {
                    machine_id: Some(MID),
                    ..inputs(k)
                })
                .expect("id")
                .0
            })
            .collect();
        assert_eq!(keys[0], "simnor:/srv/a/flash.img");
        assert!(
            ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
            "{ids:x?}"
        );
        // Absolute paths and MTD names are kept as written: existing ids stay.
        assert_eq!(target_key("mtd:firmware", Path::new("/x")), "mtd:firmware");
        assert_eq!(
            target_key("file:/dev/mmcblk0p2", Path::new("/x")),
            "file:/dev/mmcblk0p2"
        );
        println!("three agents, one host, target {spec} in three directories: ids {ids:016x?}");
    }

    #[test]
    fn sources_in_order_and_unusable_values_skipped() {
        let t = "file:/dev/mmcblk0p2";
        let p = Path::new("/etc/firmcast/device-id");
        let all = Inputs {
            file: Some((p, "serial-0042\n")),
            machine_id: Some(MID),
            mac: Some(("eth0", "02:00:00:00:00:01")),
            ..inputs(t)
        };
        assert_eq!(
            derive(all).expect("file").1,
            IdSource::File(p.to_path_buf())
        );
        assert!(derive(Inputs {
            file: Some((p, "  \n")),
            ..all
        })
        .is_err());
        let no_file = Inputs { file: None, ..all };
        assert_eq!(derive(no_file).expect("mid").1, IdSource::MachineId);
        for bad in ["uninitialized\n", "00000000000000000000000000000000", ""] {
            let r = derive(Inputs {
                machine_id: Some(bad),
                ..no_file
            })
            .expect("mac");
            assert!(matches!(r.1, IdSource::Mac { .. }), "{bad:?}: {:?}", r.1);
        }
        for bad in ["00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "junk"] {
            let r = derive(Inputs {
                machine_id: None,
                mac: Some(("eth0", bad)),
                ..no_file
            })
            .expect("guess");
            assert!(r.1.is_guess(), "{bad}");
        }
        // FNV-1a-64 reference values.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn link_holding_the_interface_address() {
        let links = vec![
            Link {
                name: "lo".into(),
                addrs: vec![Ipv4Addr::LOCALHOST],
                mac: "00:00:00:00:00:00".into(),
            },
            Link {
                name: "eth1".into(),
                addrs: vec![Ipv4Addr::new(10, 0, 0, 9)],
                mac: "02:00:00:00:00:09".into(),
            },
            Link {
                name: "eth0".into(),
                addrs: vec![Ipv4Addr::new(192, 168, 1, 1)],
                mac: "02:00:00:00:00:01".into(),
            },
        ];
        let l = pick_link(&links, Ipv4Addr::new(10, 0, 0, 9)).expect("eth1");
        assert_eq!(l.name, "eth1");
        assert_eq!(
            pick_link(&links, Ipv4Addr::UNSPECIFIED)
                .expect("first")
                .name,
            "eth0"
        );
        assert!(pick_link(&links, Ipv4Addr::new(10, 9, 9, 9)).is_none());
    }
}
