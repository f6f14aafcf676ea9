//! The `ringd` binary: flags → Config → workers → exit code.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use clap::{CommandFactory, FromArgMatches};
use cli::{Cli, Command, ServeArgs};
use ringd::{config::Config, driver, sys, worker};

/// Serves with flags (and the config file they name); SIGHUP re-reads that file.
fn serve_args(args: ServeArgs, given: Vec<String>) -> anyhow::Result<()> {
    let config =
        cli::build_config(&args, &given).map_err(|errs| anyhow::anyhow!(errs.join("\n")))?;
    // WSGI routes need a Python interpreter: the `ringd-wsgi` package runs them.
    if let Some((app, at)) = config.sites.wsgi_apps().into_iter().next() {
        let file = config
            .config_file
            .as_deref()
            .map_or("FILE".into(), |p| p.display().to_string());
        anyhow::bail!(
            "{at}: `wsgi = {{ app = {app:?} }}` runs a Python app, which this `ringd` binary \
             cannot host; install the Python package in the app's virtualenv \
             (`pip install ./python`) and run `ringd-wsgi --config {file}` there"
        );
    }
    // CGI runs on the uring and epoll drivers; tokio-uring does not spawn scripts.
    if config.sites.has_cgi() && config.backend == ringd::config::Backend::TokioUring {
        anyhow::bail!(
            "CGI (--cgi, cgi routes) runs on --backend uring or epoll; the tokio-uring \
             backend does not spawn scripts"
        );
    }
    let reloader: Option<worker::Reloader> = args
        .config
        .is_some()
        .then(|| Box::new(move || cli::build_config(&args, &given)) as worker::Reloader);
    serve(config, reloader)
}

/// `ringd check FILE`: exit 0 with a summary line, or the errors.
fn check(file: &std::path::Path) -> anyhow::Result<()> {
    let args = ServeArgs::try_parse_config(file);
    match cli::build_config(&args, &[]) {
        Ok(c) => {
            let sites = c.sites.sites.len();
            let routes = c.sites.route_count();
            let ups = c.sites.upstreams.len();
            println!(
                "{}: ok: {sites} site{}, {routes} route{}, {ups} upstream{}",
                file.display(),
                if sites == 1 { "" } else { "s" },
                if routes == 1 { "" } else { "s" },
                if ups == 1 { "" } else { "s" },
            );
            if let Some(t) = &c.tls {
                println!("  {}", t.describe());
            }
            Ok(())
        }
        Err(errs) => anyhow::bail!("{}", errs.join("\n")),
    }
}

/// `ringd reload --pid-file F`: SIGHUP to the PID in F.
fn reload(pid_file: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(pid_file)
        .with_context(|| format!("cannot read the PID file {}", pid_file.display()))?;
    let pid: libc::pid_t = text
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .with_context(|| format!("{} does not hold a PID", pid_file.display()))?;
    // SAFETY: kill(2) with a positive pid and a valid signal number has no memory effects.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        let e = std::io::Error::last_os_error();
        anyhow::bail!("cannot signal ringd (PID {pid}): {e}");
    }
    println!("ringd: sent SIGHUP to {pid}; it logs the outcome of the reload on its stderr");
    Ok(())
}

/// Removes the PID file when dropped.
struct PidFile(Option<std::path::PathBuf>);

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn serve(config: Config, reloader: Option<worker::Reloader>) -> anyhow::Result<()> {
    // Before any thread starts (the certificate renewer below, the workers later): every
    // thread inherits the mask, so SIGINT/SIGTERM/SIGHUP reach only the main thread's
    // sigtimedwait. A thread that left them unblocked could take one and die of its default
    // action with the whole process; so could the process itself before `run` blocked them
    // (a SIGHUP right after the PID file appears).
    sys::block_shutdown_signals().context("cannot block the shutdown signals")?;
    if let Err(e) = sys::raise_nofile_limit() {
        eprintln!("ringd: could not raise the open-file limit: {e}");
    }
    driver::check_available(config.backend)?;
    if let Some(t) = &config.tls {
        ringd::tls::spawn_renewer(t);
    }
    let mut server = worker::Server::bind(&config)?;
    if let Some(r) = reloader {
        server.set_reloader(r);
    }
    let _pid = match &config.pid_file {
        Some(p) => {
            std::fs::write(p, format!("{}\n", std::process::id()))
                .with_context(|| format!("cannot write the PID file {}", p.display()))?;
            PidFile(Some(p.clone()))
        }
        None => PidFile(None),
    };
    let addr = server.local_addr();
    let host = match addr {
        std::net::SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        std::net::SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    let scheme = match &config.tls {
        Some(t) if t.only => "https",
        Some(_) => "http(s)",
        None => "http",
    };
    let mut out = std::io::stdout().lock();
    let what = match &config.config_file {
        Some(f) => format!(
            "{} ({} site{})",
            f.display(),
            config.sites.sites.len(),
            if config.sites.sites.len() == 1 {
                ""
            } else {
                "s"
            }
        ),
        None => config.root.display().to_string(),
    };
    writeln!(
        out,
        "ringd: serving {what} on {scheme}://{host}/ ({} worker{}, {})",
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

/// `ringd purge URL`: one `PURGE` request to the server, its status line printed.
fn purge(url: &str, to: Option<&str>) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("`{url}`: give an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || path.contains(char::is_whitespace) {
        anyhow::bail!("`{url}`: not a URL of the form http://HOST[:PORT]/PATH");
    }
    let addr = match to {
        Some(a) => a.to_string(),
        None if authority.contains(':') => authority.to_string(),
        None => format!("{authority}:80"),
    };
    let mut s =
        std::net::TcpStream::connect(&addr).with_context(|| format!("cannot connect to {addr}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "PURGE {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("cannot send to {addr}"))?;
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let status_line = text.lines().next().unwrap_or("").to_string();
    let code = status_line.split_whitespace().nth(1).unwrap_or("");
    println!("{status_line}");
    if code != "200" {
        anyhow::bail!("{url} was not purged ({status_line:?}): is this machine in [cache] purge_from, and is the URL on a caching route?");
    }
    Ok(())
}

fn real_main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let given = cli::given_flags(&matches);
    match cli.command {
        Some(Command::Doctor(args)) => {
            let mut out = std::io::stdout().lock();
            ringd::doctor::run(&mut out).context("cannot write to stdout")?;
            // The listener's mode, from the same flags (or config file) `serve` would take.
            let sub_given = matches
                .subcommand_matches("doctor")
                .map(cli::given_flags)
                .unwrap_or_default();
            match cli::build_config(&args, &sub_given) {
                Ok(c) => ringd::doctor::listener_report(&mut out, &c)
                    .context("cannot write to stdout")?,
                Err(errs) => writeln!(out, "  listener: not checked: {}", errs.join("; "))
                    .context("cannot write to stdout")?,
            }
            Ok(())
        }
        Some(Command::Check { file }) => check(&file),
        Some(Command::Reload { pid_file }) => reload(&pid_file),
        Some(Command::Purge { url, to }) => purge(&url, to.as_deref()),
        Some(Command::Trust { data_dir }) => {
            let dir = data_dir
                .or_else(ringd::tls::store::default_data_dir)
                .context("no data folder: give --data-dir (or set HOME or XDG_DATA_HOME)")?;
            print!("{}", ringd::tls::store::trust_text(&dir));
            Ok(())
        }
        Some(Command::Serve(args)) => serve_args(*args, given),
        None => serve_args(cli.serve, given),
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
