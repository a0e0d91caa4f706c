//! `firmcast agent-config`: an agent config file from `KEY=VALUE` pairs,
//! through the agent's own schema and writer
//! ([`firmcast_agent::config::writer`]).

use std::fs;

use firmcast_agent::config::writer::AgentToml;

use crate::cli::AgentConfigArgs;
use crate::error::{self, Error};

/// The config text for `settings` (`key=value` or `table.key=value`).
pub fn render<S: AsRef<str>>(settings: &[S]) -> Result<String, Error> {
    let mut toml = AgentToml::new();
    for kv in settings {
        let kv = kv.as_ref();
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| error::config(format!("agent-config: {kv:?} is not KEY=VALUE")))?;
        toml.set_text(k, v)
            .map_err(|e| error::config(format!("agent-config: {e}")))?;
    }
    Ok(toml.to_string())
}

/// Run `firmcast agent-config`.
pub fn run(a: &AgentConfigArgs) -> Result<u8, Error> {
    let text = render(&a.settings)?;
    match &a.out {
        Some(path) => fs::write(path, text)
            .map_err(|e| error::runtime(format!("write {}: {e}", path.display())))?,
        None => print!("{text}"),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_become_the_agent_file() {
        let t = render(&["board=acme,rt1", "window_blocks=8", "test.rx_loss_seed=3"]).expect("ok");
        assert_eq!(
            t,
            "board = \"acme,rt1\"\nwindow_blocks = 8\n\n[test]\nrx_loss_seed = 3\n"
        );
        let e = render(&["windowblocks=8"]).expect_err("unknown key");
        assert!(e.to_string().contains("windowblocks: unknown key"), "{e}");
        assert!(render(&["board"]).is_err());
    }
}
