//! The root `Cross.toml` as cross 0.2.5 reads it: the structs below mirror
//! `src/cross_toml.rs` at cross's tag v0.2.5 (field names, kebab-case,
//! `build-std: Option<bool>`, string-or-struct `dockerfile`, string-or-list
//! `pre-build`), deserialised with the same `toml` 0.5 and `serde_ignored`,
//! so a key cross would reject fails here and a key it would ignore (it
//! warns "found unused key(s)") fails too. cross itself needs Docker to get
//! past its config; this check does not.

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[allow(dead_code)]
struct CrossEnvConfig {
    volumes: Option<Vec<String>>,
    passthrough: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(dead_code)]
struct CrossBuildConfig {
    #[serde(default)]
    env: CrossEnvConfig,
    xargo: Option<bool>,
    build_std: Option<bool>,
    default_target: Option<String>,
    pre_build: Option<PreBuild>,
    dockerfile: Option<Dockerfile>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(dead_code)]
struct CrossTargetConfig {
    xargo: Option<bool>,
    build_std: Option<bool>,
    image: Option<String>,
    dockerfile: Option<Dockerfile>,
    pre_build: Option<PreBuild>,
    runner: Option<String>,
    #[serde(default)]
    env: CrossEnvConfig,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Dockerfile {
    File(String),
    Struct {
        file: String,
        context: Option<String>,
        #[serde(rename = "build-args")]
        build_args: Option<HashMap<String, String>>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum PreBuild {
    Single(String),
    Lines(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
struct CrossToml {
    #[serde(default, rename = "target")]
    targets: HashMap<String, CrossTargetConfig>,
    #[serde(default)]
    build: CrossBuildConfig,
}

fn parse(text: &str) -> Result<(CrossToml, BTreeSet<String>), String> {
    let mut unused = BTreeSet::new();
    let mut de = toml::Deserializer::new(text);
    let cfg = serde_ignored::deserialize(&mut de, |path| {
        unused.insert(path.to_string());
    })
    .map_err(|e| e.to_string())?;
    Ok((cfg, unused))
}

fn workspace_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn root_cross_toml_parses_as_cross_0_2_5_reads_it() {
    let (cfg, unused) =
        parse(&workspace_file("Cross.toml")).unwrap_or_else(|e| panic!("Cross.toml: {e}"));
    assert!(
        unused.is_empty(),
        "Cross.toml: keys cross 0.2.5 ignores: {unused:?}"
    );
    let mut targets: Vec<_> = cfg
        .targets
        .iter()
        .map(|(t, c)| (t.as_str(), c.build_std))
        .collect();
    targets.sort();
    println!(
        "cross_toml: build.env.passthrough {:?}, targets {targets:?}",
        cfg.build.env.passthrough
    );
    for mips in ["mips-unknown-linux-musl", "mipsel-unknown-linux-musl"] {
        assert_eq!(
            cfg.targets.get(mips).and_then(|c| c.build_std),
            Some(true),
            "{mips}: tier 3, needs build-std = true"
        );
    }
}

#[test]
fn the_mirror_rejects_what_0_2_5_rejects() {
    // The old cross/Cross.toml's array form: cross 0.2.5 fails on it.
    let err = parse("[target.mipsel-unknown-linux-musl]\nbuild-std = [\"std\", \"panic_abort\"]\n")
        .expect_err("build-std as an array must not parse");
    println!("cross_toml: array build-std refused: {err}");
    let (_, unused) = parse("[target.x]\nbuildstd = true\n").expect("unknown key parses");
    assert_eq!(
        unused.into_iter().collect::<Vec<_>>(),
        ["target.x.buildstd"]
    );
}
