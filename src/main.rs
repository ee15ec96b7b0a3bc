//! The `eingang` binary: parses the command line, runs one command, and turns errors into the
//! contract's exit codes and its one-line `error: <what>: <why>` on stderr. The hidden
//! `parse-sheet` command is the child that reads one spreadsheet under resource limits.

use std::io::IsTerminal;

use clap::Parser;
use eingang::cli::{self, BadConfig, Cli};
use eingang::escape;
use tracing_subscriber::field::MakeExt;

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("parse-sheet") {
        std::process::exit(eingang::format::xlsx_table::child_main());
    }
    let cli = Cli::parse();
    let quiet = !matches!(cli.command, cli::Command::Run | cli::Command::Sync { .. });
    init_logging(quiet);
    // A panic inside the pipeline is caught and becomes that item's rejection; log it as one
    // line instead of the default hook's multi-line report.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "internal error");
    }));
    let code = match cli::execute(cli) {
        Ok(code) => code,
        Err(e) if e.is::<BadConfig>() => {
            for line in e.to_string().lines() {
                eprintln!("error: {}", escape::text(line));
            }
            2
        }
        Err(e) => {
            let text = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {}", escape::text(&text));
            1
        }
    };
    std::process::exit(code);
}

fn init_logging(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("EINGANG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Every field and message is written with its control characters escaped: a file name
    // or subject with an LF or ESC cannot forge a log line or drive the terminal.
    let fields = tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        match field.name() {
            "message" => write!(writer, "{}", escape::text(&text)),
            name => write!(writer, "{name}={}", escape::text(&text)),
        }
    })
    .delimited(" ");
    tracing_subscriber::fmt()
        .fmt_fields(fields)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
