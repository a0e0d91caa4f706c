//! `firmcast-agent`: see `firmcast-agent --help` and the library docs.

fn main() {
    std::process::exit(firmcast_agent::main_with_args(std::env::args_os()));
}
