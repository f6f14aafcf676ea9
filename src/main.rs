//! The `ringd` binary: flags → Config → workers → exit code.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use cli::{Cli, Command};
use ringd::{config::Config, driver, sys, worker};

fn serve(config: Config) -> anyhow::Result<()> {
    if let Err(e) = sys::raise_nofile_limit() {
        eprintln!("ringd: could not raise the open-file limit: {e}");
    }
    driver::check_available(config.backend)?;
    let server = worker::Server::bind(&config)?;
    let addr = server.local_addr();
    let host = match addr {
        std::net::SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        std::net::SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "ringd: serving {} on http://{host}/ ({} worker{}, {})",
        config.root.display(),
        config.workers,
        if config.workers == 1 { "" } else { "s" },
        config.backend.name()
    )
    .and_then(|()| out.flush())
    .context("cannot write to stdout")?;
    drop(out);
    server.run()?;
    Ok(())
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Doctor) => {
            let mut out = std::io::stdout().lock();
            ringd::doctor::run(&mut out).context("cannot write to stdout")?;
            Ok(())
        }
        Some(Command::Serve(args)) => serve((*args).into_config()?),
        None => serve(cli.serve.into_config()?),
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
