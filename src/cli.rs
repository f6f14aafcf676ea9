//! Command-line flags (clap) and their translation into a validated `Config`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};

use ringd::config::file::{FileConfig, Locator};
pub use ringd::config::units::{parse_duration, parse_size};
use ringd::config::{self, Backend, CacheConfig, Config, ConfigError, Limits, Timeouts};

const EXAMPLES: &str = "\
Examples:
  ringd ./public                       serve ./public on http://127.0.0.1:8080/
  ringd --config ringd.toml            serve the sites of a config file (docs/config.md)
  ringd check ringd.toml               validate a config file without serving
  ringd reload --pid-file ringd.pid    re-read the config of a running ringd (SIGHUP)
  ringd purge http://localhost:8080/api/x   drop a cached response in every worker
  ringd --listen 0.0.0.0:80 /srv/www   serve on every interface, port 80
  ringd --workers 2 --no-pin .         two unpinned workers
  ringd --backend epoll .              the epoll driver instead of io_uring
  ringd --access-log /var/log/ringd.log --keepalive-timeout 5s .
  ringd doctor                         what this kernel offers, and advice

Sizes take an optional unit: 512, 16K, 16KiB, 1M, 1MiB, 1G (all powers of 1024).
Durations take a unit: 500ms, 10s, 2m, 1h (a bare number means seconds).";

/// ringd: a thread-per-core HTTP/1.1 static-file server on io_uring.
///
/// Serves a folder over HTTP/1.1 with one pinned worker thread per CPU, each with its own
/// SO_REUSEPORT listener, io_uring ring and open-file cache.
#[derive(Debug, Parser)]
#[command(
    name = "ringd",
    version,
    about,
    long_about,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a folder (the same as giving no subcommand). Example: `ringd serve ./public`.
    #[command(after_help = EXAMPLES)]
    Serve(Box<ServeArgs>),
    /// Print what this kernel and build offer (io_uring opcodes, backends, limits) with a line
    /// of advice for each setting that is too low, and whether kernel TLS is there. With
    /// serve flags or `--config`, also the mode the listener would run in (plain HTTP, or
    /// HTTPS and its certificates). Example: `ringd doctor`, `ringd doctor --config ringd.toml`.
    Doctor(Box<ServeArgs>),
    /// Validate a config file without serving (like `nginx -t`): exit 0 with a one-line
    /// summary, or 1 with each error as `FILE:LINE:COL: message`. Example:
    /// `ringd check ringd.toml`.
    Check {
        /// The config file. Example: `ringd.toml`.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Make a running ringd re-read its config file (sends SIGHUP to the PID in the file that
    /// its `--pid-file` wrote). Example: `ringd reload --pid-file /run/ringd.pid`.
    Reload {
        /// The PID file the server writes (`--pid-file`, or `pid_file` in the config).
        #[arg(long, value_name = "PATH")]
        pid_file: PathBuf,
    },
    /// Drop a cached response in every worker of a running ringd: sends `PURGE` for the URL
    /// (the server must list this machine in `[cache] purge_from`). Exit 0 when purged.
    /// Example: `ringd purge http://localhost:8080/api/items?page=2`.
    Purge {
        /// The URL whose cached response to drop (`http://HOST[:PORT]/PATH[?QUERY]`).
        #[arg(value_name = "URL")]
        url: String,
        /// Connect here instead of HOST:PORT (the Host field stays the URL's). Example:
        /// `--to 127.0.0.1:8080`.
        #[arg(long, value_name = "ADDR")]
        to: Option<String>,
    },
    /// Print where ringd's local CA certificate is (the one that signs `tls = "internal"`
    /// sites) and how to make this machine's browsers and tools trust it. Example:
    /// `ringd trust`.
    Trust {
        /// The data folder (as the server's `--data-dir`) [default: $XDG_DATA_HOME/ringd,
        /// else ~/.local/share/ringd]. Example: `--data-dir /var/lib/ringd`.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

/// The I/O driver, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// uring where the kernel (and a container's seccomp profile) allows io_uring, else epoll,
    /// with one line on stderr saying why.
    Auto,
    /// ringd's own io_uring completion loop (multishot accept/recv, splice).
    Uring,
    /// A mio (epoll) readiness loop with sendfile(2).
    Epoll,
    /// One tokio-uring runtime per worker (needs the `tokio-uring` cargo feature).
    TokioUring,
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Backend {
        match b {
            BackendArg::Auto => match ringd::driver::check_available(Backend::Uring) {
                Ok(()) => Backend::Uring,
                Err(e) => {
                    eprintln!("ringd: --backend auto: {e}; using the epoll backend");
                    Backend::Epoll
                }
            },
            BackendArg::Uring => Backend::Uring,
            BackendArg::Epoll => Backend::Epoll,
            BackendArg::TokioUring => Backend::TokioUring,
        }
    }
}

#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Folder to serve [default: the current directory]. Example: `ringd ./public`.
    #[arg(value_name = "ROOT")]
    pub root: Option<PathBuf>,

    /// Serve the sites of this TOML config file (virtual hosts, routes, redirects, headers;
    /// every key in docs/config.md). Flags given beside it override its top-level settings;
    /// SIGHUP re-reads it. Example: `--config ringd.toml`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Forward every request that finds no file under ROOT to this upstream server (nginx's
    /// `try_files $uri @app`); repeat for several (round robin), `unix:/path` for a unix
    /// socket. Example: `ringd ./public --proxy 127.0.0.1:8000`.
    #[arg(long = "proxy", value_name = "ADDR")]
    pub proxy: Vec<String>,

    /// Run CGI scripts (RFC 3875) from DIR for URL paths under PREFIX; repeatable. Example:
    /// `--cgi /cgi-bin=./cgi-bin` runs ./cgi-bin/hello.sh for /cgi-bin/hello.sh/extra (PATH_INFO
    /// /extra).
    #[arg(long = "cgi", value_name = "PREFIX=DIR")]
    pub cgi: Vec<String>,

    /// Most CGI scripts running at once per worker; a request beyond it gets 503. Example:
    /// `--cgi-max-procs 16`.
    #[arg(long, value_name = "N", default_value_t = Config::default().cgi_max_procs)]
    pub cgi_max_procs: usize,

    /// Write the server's PID to this file (removed at exit), for `ringd reload`. Example:
    /// `--pid-file /run/ringd.pid`.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,

    /// Address and port to listen on; port 0 picks a free port (the URL printed at start
    /// says which). Example: `--listen 0.0.0.0:8080`, `--listen [::1]:0`.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Serve HTTPS with this PEM certificate chain (leaf first), with `--tls-key`; a plain
    /// HTTP request then gets 400. Example: `--tls-cert cert.pem --tls-key key.pem`.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of `--tls-cert`. Example:
    /// `--tls-key key.pem`.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Keep TLS records in user space (rustls) even where the kernel offers kernel TLS (the
    /// `tls` ULP). Default: where `ringd doctor` finds it available, each TLS connection hands
    /// its keys to the socket after the handshake, so file bodies go by sendfile/splice.
    /// Example: `--no-ktls`.
    #[arg(long)]
    pub no_ktls: bool,

    /// Where ringd keeps its local CA and the certificates it issues for sites with
    /// `tls = "internal"` [default: $XDG_DATA_HOME/ringd, else ~/.local/share/ringd]. Example:
    /// `--data-dir /var/lib/ringd`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Worker threads, each with its own listener and ring [default: the CPUs this process
    /// may run on]. Example: `--workers 4`.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// I/O driver: auto picks uring where io_uring can run (`ringd doctor` says whether it
    /// can, and why not), else epoll. Example: `--backend epoll`.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendArg,

    /// Append a combined-format access log to this file (buffered per worker, flushed every
    /// 250 ms) [default: off]. Example: `--access-log /var/log/ringd.log`.
    #[arg(long, value_name = "PATH")]
    pub access_log: Option<PathBuf>,

    /// Follow symlinks that stay inside the root (they never lead out of it). Default: off,
    /// a symlink answers 404. Example: `--follow-symlinks`.
    #[arg(long)]
    pub follow_symlinks: bool,

    /// Serve files and folders whose name starts with '.'. Default: off, they answer 404.
    /// Example: `--serve-dotfiles`.
    #[arg(long)]
    pub serve_dotfiles: bool,

    /// Longest request line (method, target, version); longer → 414. Example:
    /// `--max-request-line 4K`.
    #[arg(long, value_name = "SIZE", default_value = "8KiB", value_parser = parse_size)]
    pub max_request_line: u64,

    /// Largest header section; larger → 431. Example: `--max-header-bytes 32K`.
    #[arg(long, value_name = "SIZE", default_value = "16KiB", value_parser = parse_size)]
    pub max_header_bytes: u64,

    /// Most header fields in one request; more → 431. Example: `--max-headers 50`.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_headers)]
    pub max_headers: usize,

    /// Largest request body that is read and discarded; larger → 413. Example:
    /// `--max-body 64K`.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub max_body: u64,

    /// Most open connections per worker; at the limit a worker stops accepting until one
    /// closes (backpressure). Example: `--max-conns 1024`.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_conns_per_worker)]
    pub max_conns: usize,

    /// Most responses one connection may have queued before ringd stops reading its
    /// pipelined requests. Example: `--max-pipeline 16`.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_pipeline_depth)]
    pub max_pipeline: usize,

    /// Time allowed from the first byte of a request (or the accept) to the end of its
    /// header; then the connection is closed (slowloris defence). Example: `--header-timeout 5s`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// How long an idle keep-alive connection stays open. Example: `--keepalive-timeout 15s`.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,

    /// Close a connection whose response makes no progress for this long. Example:
    /// `--send-timeout 30s`.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub send_timeout: Duration,

    /// On SIGINT/SIGTERM, how long responses in flight may take to finish before the workers
    /// exit. Idle keep-alive connections get one more second in which a request that arrives
    /// is still answered (with `Connection: close`). Example: `--shutdown-timeout 3s`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// How long a cached file (fd, metadata, encoded head) is trusted before it is checked
    /// again. Example: `--cache-valid 100ms`.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub cache_valid: Duration,

    /// Most entries in each worker's open-file cache. Example: `--cache-entries 10000`.
    #[arg(long, value_name = "N", default_value_t = CacheConfig::default().max_entries)]
    pub cache_entries: usize,

    /// Most bytes of small-file bodies each worker keeps in memory. Example:
    /// `--cache-bytes 256M`.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub cache_bytes: u64,

    /// Files up to this size are served from memory in a single send; larger ones are
    /// spliced (uring, tokio-uring) or sendfile'd (epoll). Example: `--small-file-max 16K`.
    #[arg(long, value_name = "SIZE", default_value = "64KiB", value_parser = parse_size)]
    pub small_file_max: u64,

    /// Splice pipes per worker; a connection that finds none free waits for one. Example:
    /// `--pipe-pool 128`.
    #[arg(long, value_name = "N", default_value_t = Config::default().pipe_pool)]
    pub pipe_pool: usize,

    /// Capacity asked for each splice pipe (F_SETPIPE_SZ; the default size is kept if the
    /// kernel refuses). Example: `--pipe-size 1M`.
    #[arg(long, value_name = "SIZE", default_value = "256KiB", value_parser = parse_size)]
    pub pipe_size: u64,

    /// Proxied bodies with a Content-Length at least this large, and tunnels, move upstream
    /// → pipe → client by splice (uring and epoll, plain-HTTP clients, bodies passed on
    /// unchanged); smaller ones are copied through memory. 0 turns splicing off. Example:
    /// `--proxy-splice-min 0`.
    #[arg(long, value_name = "SIZE", default_value = "64KiB", value_parser = parse_size)]
    pub proxy_splice_min: u64,

    /// TCP_NOTSENT_LOWAT for accepted sockets: how much unsent data the kernel may hold per
    /// connection before the worker stops writing and waits. Small values keep large bodies
    /// flowing from the worker's own core and memory low; 0 keeps the kernel's setting
    /// (sysctl net.ipv4.tcp_notsent_lowat). Example: `--notsent-lowat 128K`.
    #[arg(long, value_name = "SIZE", default_value = "16KiB", value_parser = parse_size)]
    pub notsent_lowat: u64,

    /// Hand a new connection to the workers only once its first bytes arrive
    /// (TCP_DEFER_ACCEPT), so accepting it and reading its request take one wakeup, not two;
    /// a connection that sends nothing is handed over after about this long anyway (whole
    /// seconds). 0 accepts at the handshake. nginx's `listen ... deferred` uses 1s. Example:
    /// `--defer-accept 0`.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub defer_accept: Duration,

    /// uring backend only: when a loop pass finds nothing to do, poll the ring for up to this
    /// long before sleeping in the kernel. The worker then rarely sleeps under load, so clients
    /// rarely pay to wake it (on a VM, an inter-processor interrupt per wakeup), at the price
    /// of its core showing busy while it polls. Default 0: off. Example: `--busy-poll 50us`.
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    pub busy_poll: Duration,

    /// Do not pin worker i to the i-th allowed CPU. Example: `--no-pin`.
    #[arg(long)]
    pub no_pin: bool,
}

fn to_usize(v: u64, flag: &str) -> anyhow::Result<usize> {
    usize::try_from(v).with_context(|| format!("{flag} is too large"))
}

/// Check the root: exists, is a directory, and can be read; return its canonical path.
fn check_root(root: &Path) -> anyhow::Result<PathBuf> {
    let shown = root.display();
    let canon = match std::fs::canonicalize(root) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("root folder {shown} does not exist")
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            bail!("cannot open root folder {shown}: permission denied")
        }
        Err(e) => bail!("cannot open root folder {shown}: {e}"),
    };
    let meta = std::fs::metadata(&canon).with_context(|| format!("cannot stat {shown}"))?;
    if !meta.is_dir() {
        bail!("root {shown} is not a directory");
    }
    if let Err(e) = std::fs::read_dir(&canon) {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            bail!("cannot read root folder {shown}: permission denied");
        }
        bail!("cannot read root folder {shown}: {e}");
    }
    Ok(canon)
}

/// Check that the access log can be opened for appending (the workers open it again).
fn check_access_log(path: &Path) -> anyhow::Result<PathBuf> {
    let shown = path.display();
    match std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
    {
        Ok(_) => Ok(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            bail!("cannot open access log {shown}: permission denied")
        }
        Err(e) => bail!("cannot open access log {shown}: {e}"),
    }
}

/// The clap ids of the flags that the command line gave explicitly (they win over the file).
pub fn given_flags(m: &clap::ArgMatches) -> Vec<String> {
    let m = match m.subcommand() {
        Some(("serve", sub)) => sub,
        _ => m,
    };
    m.ids()
        .filter(|id| m.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine))
        .map(|id| id.as_str().to_string())
        .collect()
}

/// Flags and (with `--config`) the file, merged and validated: the server's `Config`.
/// `given` names the flags set on the command line, which override the file's values.
pub fn build_config(args: &ServeArgs, given: &[String]) -> Result<Config, Vec<String>> {
    let Some(path) = args.config.clone() else {
        return args
            .clone()
            .into_config()
            .map_err(|e| vec![format!("{e:#}")]);
    };
    if args.root.is_some() {
        return Err(vec![
            "give a ROOT folder or --config FILE, not both (a config file names its sites' roots)"
                .into(),
        ]);
    }
    let loaded = config::load_file(&path)
        .map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let loc = Locator {
        file: &path,
        text: &loaded.text,
    };
    let mut merged = args.clone();
    let mut placed = Vec::new();
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    if let Err(e) = merge_file(&mut merged, given, &loaded.file, &loc, &base, &mut placed) {
        return Err(e.iter().map(ToString::to_string).collect());
    }
    // The first site's root stands in for `root` (messages, and a valid folder to check).
    let first_root = loaded.sites.roots.first().cloned();
    merged.root = Some(first_root.clone().unwrap_or_else(|| base.clone()));
    let merged_backend = merged.backend;
    let mut cfg = match merged.clone().into_config() {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("{e:#}");
            // A value from the file: say where it is.
            for (flag, key, span) in &placed {
                if msg.contains(flag.as_str()) {
                    return Err(vec![loc
                        .error(Some(span.clone()), format!("`{key}`: {msg}"))
                        .to_string()]);
                }
            }
            return Err(vec![msg]);
        }
    };
    let proxies = !loaded.sites.upstreams.is_empty();
    cfg.tls = merged
        .tls_setup(&loaded.sites)
        .map_err(|e| vec![format!("{}: {e:#}", path.display())])?;
    cfg.sites = std::sync::Arc::new(loaded.sites);
    cfg.backend =
        proxy_backend(cfg.backend, merged_backend, proxies).map_err(|e| vec![e.to_string()])?;
    cfg.config_file = Some(std::path::absolute(&path).unwrap_or(path));
    if let Some(r) = first_root {
        cfg.root = r;
    }
    Ok(cfg)
}

/// The backend a config that proxies runs on: every driver drives upstream connections, so
/// the pick stands (`auto` keeps its normal choice). The one place to refuse a backend should
/// a gateway kind ever run on only some of them.
fn proxy_backend(picked: Backend, _asked: BackendArg, _proxies: bool) -> anyhow::Result<Backend> {
    Ok(picked)
}

/// Copies the file's top-level settings into `args`, except for flags in `given`. Records,
/// for each value taken, its flag, key and place in the file (for later error messages).
fn merge_file(
    args: &mut ServeArgs,
    given: &[String],
    f: &FileConfig,
    loc: &Locator<'_>,
    base: &Path,
    placed: &mut Vec<(String, &'static str, std::ops::Range<usize>)>,
) -> Result<(), Vec<ConfigError>> {
    let mut errs = Vec::new();
    let free = |id: &str| !given.iter().any(|g| g == id);
    macro_rules! take {
        ($key:literal, $field:ident, $conv:expr) => {
            if let Some(v) = &f.$field {
                if free(stringify!($field)) {
                    placed.push((format!("--{}", $key.replace('_', "-")), $key, v.span()));
                    #[allow(clippy::redundant_closure_call)]
                    match ($conv)(v.get_ref()) {
                        Ok(x) => args.$field = x,
                        Err(m) => errs.push(loc.error(Some(v.span()), format!("`{}`: {m}", $key))),
                    }
                }
            }
        };
    }
    if let Some(l) = &f.listen {
        if free("listen") {
            match l.get_ref().as_slice() {
                [one] => match one.parse::<SocketAddr>() {
                    Ok(a) => args.listen = a,
                    Err(_) => errs.push(loc.error(
                        Some(l.span()),
                        format!("`listen`: {one:?} is not an ADDR:PORT (e.g. \"127.0.0.1:8080\")"),
                    )),
                },
                _ => errs.push(loc.error(
                    Some(l.span()),
                    "`listen`: give exactly one ADDR:PORT (several listeners per server are not \
                     supported yet)",
                )),
            }
        }
    }
    let ok = |v: &usize| Ok::<_, String>(Some(*v));
    let size = |v: &config::units::Size| Ok::<_, String>(v.0);
    let dur = |v: &config::units::Dur| Ok::<_, String>(v.0);
    take!("workers", workers, ok);
    take!("backend", backend, |v: &String| {
        BackendArg::from_str(v, true)
            .map_err(|_| format!("{v:?} is not a backend (auto, uring, epoll or tokio-uring)"))
    });
    take!("access_log", access_log, |v: &String| Ok::<_, String>(
        Some(base.join(v))
    ));
    take!("pid_file", pid_file, |v: &String| Ok::<_, String>(Some(
        base.join(v)
    )));
    take!("data_dir", data_dir, |v: &String| Ok::<_, String>(Some(
        base.join(v)
    )));
    take!("max_request_line", max_request_line, size);
    take!("max_header_bytes", max_header_bytes, size);
    take!("max_headers", max_headers, |v: &usize| Ok::<_, String>(*v));
    take!("max_body", max_body, size);
    take!("max_conns", max_conns, |v: &usize| Ok::<_, String>(*v));
    take!("max_pipeline", max_pipeline, |v: &usize| Ok::<_, String>(
        *v
    ));
    take!("header_timeout", header_timeout, dur);
    take!("keepalive_timeout", keepalive_timeout, dur);
    take!("send_timeout", send_timeout, dur);
    take!("shutdown_timeout", shutdown_timeout, dur);
    take!("cache_valid", cache_valid, dur);
    take!("cache_entries", cache_entries, |v: &usize| Ok::<_, String>(
        *v
    ));
    take!("cache_bytes", cache_bytes, size);
    take!("small_file_max", small_file_max, size);
    take!("pipe_pool", pipe_pool, |v: &usize| Ok::<_, String>(*v));
    take!("pipe_size", pipe_size, size);
    take!("proxy_splice_min", proxy_splice_min, size);
    take!("notsent_lowat", notsent_lowat, size);
    take!("defer_accept", defer_accept, dur);
    take!("busy_poll", busy_poll, dur);
    take!("cgi_max_procs", cgi_max_procs, |v: &usize| Ok::<_, String>(
        *v
    ));
    if let (Some(p), true) = (f.pin, free("no_pin")) {
        args.no_pin = !p;
    }
    if let (Some(v), true) = (f.follow_symlinks, free("follow_symlinks")) {
        args.follow_symlinks = v;
    }
    if let (Some(v), true) = (f.serve_dotfiles, free("serve_dotfiles")) {
        args.serve_dotfiles = v;
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

impl ServeArgs {
    /// The data folder: `--data-dir`, else the default (`ringd trust` prints it).
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.data_dir
            .clone()
            .or_else(ringd::tls::store::default_data_dir)
    }

    /// HTTPS for `sites` (their `tls`) and `--tls-cert`; None when nothing asks for it.
    fn tls_setup(
        &self,
        sites: &config::Sites,
    ) -> anyhow::Result<Option<std::sync::Arc<ringd::tls::TlsSetup>>> {
        let flag = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(ringd::tls::load_pem(cert, key)?),
            _ => None,
        };
        let setup = ringd::tls::setup_for(sites, flag, self.data_dir(), !self.no_ktls)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(setup.map(std::sync::Arc::new))
    }

    /// The default flags with `--config file` (what `ringd check` validates).
    pub fn try_parse_config(file: &Path) -> ServeArgs {
        let f = file.display().to_string();
        let cli = Cli::try_parse_from(["ringd", "--config", f.as_str()])
            .expect("the default flags parse");
        cli.serve
    }

    /// Validate the flags and build the `Config` (checks the root and access log on disk).
    pub fn into_config(self) -> anyhow::Result<Config> {
        let root = match &self.root {
            Some(r) => check_root(r)?,
            None => check_root(Path::new("."))?,
        };
        let workers = match self.workers {
            Some(0) => bail!("--workers must be at least 1"),
            Some(n) => n,
            None => ringd::sys::allowed_cpus().len().max(1),
        };
        if self.max_conns == 0 {
            bail!("--max-conns must be at least 1");
        }
        if self.max_pipeline == 0 {
            bail!("--max-pipeline must be at least 1");
        }
        if self.max_headers == 0 {
            bail!("--max-headers must be at least 1");
        }
        if self.pipe_pool == 0 {
            bail!("--pipe-pool must be at least 1");
        }
        if self.max_request_line < 16 {
            bail!("--max-request-line must be at least 16 bytes");
        }
        if self.pipe_size < 4096 {
            bail!("--pipe-size must be at least 4K");
        }
        for (flag, d) in [
            ("--header-timeout", self.header_timeout),
            ("--keepalive-timeout", self.keepalive_timeout),
            ("--send-timeout", self.send_timeout),
        ] {
            if d.is_zero() {
                bail!("{flag} must be more than 0");
            }
        }
        let backend: Backend = self.backend.into();
        if !self.busy_poll.is_zero() && backend != Backend::Uring {
            bail!("--busy-poll works with --backend uring only");
        }
        if self.defer_accept > Duration::from_secs(3600) {
            bail!("--defer-accept is at most 1h");
        }
        if self.busy_poll > Duration::from_secs(1) {
            bail!(
                "--busy-poll is at most 1s (it is how long an idle worker polls before sleeping)"
            );
        }
        let access_log = match &self.access_log {
            Some(p) => Some(check_access_log(p)?),
            None => None,
        };
        let defaults = Config::default();
        let sites = if self.proxy.is_empty() {
            config::Sites::single(root.clone())
        } else {
            let mut servers = Vec::new();
            for p in &self.proxy {
                servers.push(
                    config::upstreams::server_spec(p)
                        .map_err(|e| anyhow::anyhow!("--proxy {e}"))?,
                );
            }
            config::Sites::single_with_proxy(root.clone(), config::upstreams::from_flags(servers))
        };
        let mut sites = sites;
        for spec in &self.cgi {
            let Some((prefix, dir)) = spec.split_once('=') else {
                bail!("--cgi {spec}: give PREFIX=DIR, e.g. /cgi-bin=./cgi-bin");
            };
            let dir = std::fs::canonicalize(dir)
                .ok()
                .filter(|d| d.is_dir())
                .with_context(|| format!("--cgi {spec}: {dir} is not a folder"))?;
            if !prefix.starts_with('/') {
                bail!("--cgi {spec}: the prefix must start with /");
            }
            sites.add_cgi(prefix, dir);
        }
        if self.cgi_max_procs == 0 {
            bail!("--cgi-max-procs must be at least 1");
        }
        let backend = proxy_backend(backend, self.backend, !sites.upstreams.is_empty())?;
        let tls = self.tls_setup(&sites)?;
        Ok(Config {
            sites: std::sync::Arc::new(sites),
            config_file: None,
            pid_file: self.pid_file.clone(),
            root,
            listen: self.listen,
            workers,
            pin: !self.no_pin,
            backend,
            access_log,
            follow_symlinks: self.follow_symlinks,
            serve_dotfiles: self.serve_dotfiles,
            server_name: defaults.server_name,
            limits: Limits {
                max_request_line: to_usize(self.max_request_line, "--max-request-line")?,
                max_header_bytes: to_usize(self.max_header_bytes, "--max-header-bytes")?,
                max_headers: self.max_headers,
                max_body: self.max_body,
                max_conns_per_worker: self.max_conns,
                max_pipeline_depth: self.max_pipeline,
            },
            timeouts: Timeouts {
                header_read: self.header_timeout,
                keepalive: self.keepalive_timeout,
                send_stall: self.send_timeout,
                shutdown: self.shutdown_timeout,
            },
            cache: CacheConfig {
                valid: self.cache_valid,
                max_entries: self.cache_entries,
                max_bytes: to_usize(self.cache_bytes, "--cache-bytes")?,
                small_file_max: self.small_file_max,
            },
            pipe_pool: self.pipe_pool,
            pipe_size: to_usize(self.pipe_size, "--pipe-size")?,
            proxy_splice_min: self.proxy_splice_min,
            notsent_lowat: u32::try_from(self.notsent_lowat)
                .ok()
                .filter(|v| *v <= i32::MAX as u32)
                .ok_or_else(|| anyhow::anyhow!("--notsent-lowat must be below 2G"))?,
            defer_accept: self.defer_accept,
            busy_poll: self.busy_poll,
            cgi_max_procs: self.cgi_max_procs,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_config_defaults() {
        let cli = Cli::try_parse_from(["ringd", "/"]).unwrap();
        let c = cli.serve.into_config().unwrap();
        let d = Config::default();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.limits.max_request_line, d.limits.max_request_line);
        assert_eq!(c.limits.max_header_bytes, d.limits.max_header_bytes);
        assert_eq!(c.limits.max_body, d.limits.max_body);
        assert_eq!(c.timeouts.header_read, d.timeouts.header_read);
        assert_eq!(c.timeouts.keepalive, d.timeouts.keepalive);
        assert_eq!(c.timeouts.send_stall, d.timeouts.send_stall);
        assert_eq!(c.timeouts.shutdown, d.timeouts.shutdown);
        assert_eq!(c.cache.valid, d.cache.valid);
        assert_eq!(c.cache.max_bytes, d.cache.max_bytes);
        assert_eq!(c.cache.small_file_max, d.cache.small_file_max);
        assert_eq!(c.pipe_size, d.pipe_size);
        assert_eq!(c.notsent_lowat, d.notsent_lowat);
        assert_eq!(c.busy_poll, d.busy_poll);
        assert_eq!(c.defer_accept, d.defer_accept);
        assert!(c.workers >= 1);
        assert!(c.pin);
        assert_eq!(c.root, PathBuf::from("/"));
    }

    #[test]
    fn subcommands_and_root_parse() {
        let cli = Cli::try_parse_from(["ringd", "doctor"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Doctor(_))));
        let cli = Cli::try_parse_from(["ringd", "serve", "--workers", "3", "/tmp"]).unwrap();
        match cli.command {
            Some(Command::Serve(a)) => {
                assert_eq!(a.workers, Some(3));
                assert_eq!(a.root, Some(PathBuf::from("/tmp")));
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from(["ringd", "--backend", "tokio-uring", "."]).unwrap();
        assert_eq!(cli.serve.backend, BackendArg::TokioUring);
    }

    #[test]
    fn bad_roots_are_clear_errors() {
        let e = check_root(Path::new("/nonexistent/ringd")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = check_root(Path::new("/proc/self/status")).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    #[test]
    fn zero_workers_is_rejected() {
        let cli = Cli::try_parse_from(["ringd", "--workers", "0", "/"]).unwrap();
        assert!(cli.serve.into_config().is_err());
    }
}
