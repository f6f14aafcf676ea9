//! Config: every limit, timeout and switch the server runs with, validated, with no I/O.
//!
//! Built by `cli.rs` from flags and the config file (`file.rs` reads it, `sites.rs` validates
//! its sites and routes); read (never written) by workers, drivers, proto and handler.
//! Each limit documents its default and the status code a request that crosses it receives.

pub mod file;
pub mod sites;
pub mod units;
pub mod upstreams;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use file::{ConfigError, ConfigErrors};
pub use sites::Sites;

/// Which I/O driver runs the workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Our own io_uring completion loop (the default).
    Uring,
    /// A mio (epoll) readiness loop with sendfile(2).
    Epoll,
    /// One tokio-uring runtime per worker (cargo feature `tokio-uring`).
    TokioUring,
}

impl Backend {
    /// The name used by `--backend` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Epoll => "epoll",
            Backend::TokioUring => "tokio-uring",
        }
    }

    /// Every backend, in the order reports list them.
    pub const ALL: [Backend; 3] = [Backend::Uring, Backend::Epoll, Backend::TokioUring];
}

/// Request-size limits. Each maps to the status a request that crosses it gets.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest request line (method + target + version), bytes. Default 8 KiB → 414.
    pub max_request_line: usize,
    /// Largest header section (request line excluded), bytes. Default 16 KiB → 431.
    pub max_header_bytes: usize,
    /// Most header fields in one request. Default 100 → 431.
    pub max_headers: usize,
    /// Largest request body that is read and discarded, bytes. Default 1 MiB → 413.
    pub max_body: u64,
    /// Most open connections per worker; past it the worker stops accepting (backpressure).
    /// Default 16384.
    pub max_conns_per_worker: usize,
    /// Most responses a connection may have queued ahead of the socket before the server stops
    /// reading further pipelined requests from it. Default 64.
    pub max_pipeline_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: 8 * 1024,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_body: 1024 * 1024,
            max_conns_per_worker: 16 * 1024,
            max_pipeline_depth: 64,
        }
    }
}

/// Timeouts. On expiry the connection is closed.
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// From the first byte of a request (or accept) to its complete header. Default 10 s.
    pub header_read: Duration,
    /// Idle keep-alive connection with nothing in flight. Default 60 s.
    pub keepalive: Duration,
    /// A send that makes no progress for this long. Default 60 s.
    pub send_stall: Duration,
    /// Graceful shutdown: how long in-flight responses may take before workers exit. Default 10 s.
    pub shutdown: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: Duration::from_secs(10),
            keepalive: Duration::from_secs(60),
            send_stall: Duration::from_secs(60),
            shutdown: Duration::from_secs(10),
        }
    }
}

/// The per-worker open-file cache.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// How long a cached entry (fd, metadata, encoded head) is trusted before it is re-checked
    /// with a stat. Default 1 s.
    pub valid: Duration,
    /// Most cached entries per worker. Default 4096.
    pub max_entries: usize,
    /// Most bytes of in-memory file bodies per worker. Default 64 MiB.
    pub max_bytes: usize,
    /// Files up to this size are kept in memory and sent as one head+body buffer; larger
    /// bodies are spliced (uring), sendfile'd (epoll). Default 64 KiB.
    pub small_file_max: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            valid: Duration::from_secs(1),
            max_entries: 4096,
            max_bytes: 64 * 1024 * 1024,
            small_file_max: 64 * 1024,
        }
    }
}

/// Everything a worker needs to run. Cloned once per worker; never shared mutably.
#[derive(Clone, Debug)]
pub struct Config {
    /// Folder served in the flag-only form. Canonical, absolute, checked to be a readable
    /// directory by the CLI. With a config file: the first site's root (for messages).
    pub root: PathBuf,
    /// The sites and routes (flag-only: one default site serving `root`).
    pub sites: Arc<Sites>,
    /// The config file this came from, if any (re-read on SIGHUP).
    pub config_file: Option<PathBuf>,
    /// Where the main process writes its PID (for `ringd reload --pid-file`).
    pub pid_file: Option<PathBuf>,
    /// Address every worker binds (SO_REUSEPORT). Default 127.0.0.1:8080.
    pub listen: SocketAddr,
    /// Worker threads. Default: the CPUs this process may run on.
    pub workers: usize,
    /// Pin worker i to the i-th allowed CPU.
    pub pin: bool,
    /// I/O driver.
    pub backend: Backend,
    /// Combined-format access log, buffered per worker; None = off (the default).
    pub access_log: Option<PathBuf>,
    /// Let symlinks inside the root be followed (still never out of it). Default off.
    pub follow_symlinks: bool,
    /// Serve names starting with '.'. Default off: dotfiles answer 404.
    pub serve_dotfiles: bool,
    /// Value of the Server header.
    pub server_name: String,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub cache: CacheConfig,
    /// Pipes per worker for splice (file → pipe → socket). Default 64; a connection that finds
    /// none free waits for one.
    pub pipe_pool: usize,
    /// Size of each splice pipe, bytes (fcntl F_SETPIPE_SZ). Default 256 KiB.
    pub pipe_size: usize,
    /// Proxied Content-Length bodies at least this large (and tunnels) move upstream → pipe
    /// → client by splice where the driver can (uring, epoll; plain-HTTP clients, bodies
    /// passed on unchanged); smaller ones are copied. 0 turns splicing off. Default 64 KiB.
    pub proxy_splice_min: u64,
    /// TCP_NOTSENT_LOWAT on every accepted socket, bytes; 0 leaves the kernel's setting
    /// (net.ipv4.tcp_notsent_lowat). Default 16 KiB: a large body is handed to the kernel a
    /// little at a time, so the TCP transmit work runs in the worker, not in whichever context
    /// processes the peer's ACKs, and megabytes of unsent data don't sit in socket buffers.
    pub notsent_lowat: u32,
    /// TCP_DEFER_ACCEPT on the listeners: a connection is handed to accept once its first
    /// bytes arrive, or after about this long without any (the kernel counts whole seconds
    /// of SYN-ACK retransmission). Zero: accept at the handshake. Default 1 s, what nginx's
    /// `listen ... deferred` sets: one wakeup per new connection instead of two.
    pub defer_accept: Duration,
    /// uring driver: how long an idle loop polls the ring before sleeping in the kernel.
    /// Default 0 (sleep at once). Polling spares clients the cost of waking the worker, and
    /// costs the worker's core the time it polls.
    pub busy_poll: Duration,
    /// Most CGI scripts running at once per worker; a request beyond it gets 503. Default 64.
    pub cgi_max_procs: usize,
    /// HTTPS on the listener: certificates by SNI (`--tls-cert`/`--tls-key`, or sites'
    /// `tls`). None: plain HTTP only (the default).
    pub tls: Option<Arc<crate::tls::TlsSetup>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("."),
            sites: Arc::new(Sites::single(PathBuf::from("."))),
            config_file: None,
            pid_file: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 1,
            pin: true,
            backend: Backend::Uring,
            access_log: None,
            follow_symlinks: false,
            serve_dotfiles: false,
            server_name: concat!("ringd/", env!("CARGO_PKG_VERSION")).to_string(),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            cache: CacheConfig::default(),
            pipe_pool: 64,
            pipe_size: 256 * 1024,
            proxy_splice_min: 64 * 1024,
            notsent_lowat: 16 * 1024,
            defer_accept: Duration::from_secs(1),
            busy_poll: Duration::ZERO,
            cgi_max_procs: 64,
            tls: None,
        }
    }
}

impl Sites {
    /// Whether any route runs CGI scripts.
    pub fn has_cgi(&self) -> bool {
        self.sites.iter().any(|s| {
            s.routes
                .iter()
                .any(|r| matches!(r.action, Some(sites::Action::Cgi(_))))
        })
    }
}

/// A config file, read and validated: its top-level settings (for the CLI to merge with the
/// flags) and its sites.
pub struct Loaded {
    pub file: file::FileConfig,
    pub sites: Sites,
    /// The file's text, for `file:line:col` messages about top-level values.
    pub text: String,
}

/// Reads and validates the config file at `path`: TOML shape, then sites and routes (roots
/// must be folders; relative paths are relative to the file's folder). Every error found is
/// returned, each as `file:line:col: message`.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            col: 0,
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    let mut parsed = file::parse(path, &text).map_err(|e| ConfigErrors(vec![e]))?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let loc = file::Locator {
        file: path,
        text: &text,
    };
    let site_list = std::mem::take(&mut parsed.sites);
    let mut errs = Vec::new();
    let groups = upstreams::build(parsed.upstreams.take(), &loc, &mut errs);
    let mut trusted = Vec::new();
    if let Some(t) = parsed.trusted_proxies.take() {
        for c in t.into_inner() {
            match upstreams::Cidr::parse(c.get_ref()) {
                Ok(x) => trusted.push(x),
                Err(why) => {
                    errs.push(loc.error(Some(c.span()), format!("`trusted_proxies`: {why}")))
                }
            }
        }
    }
    if site_list.is_empty() {
        errs.push(loc.error(
            None,
            "no [[sites]]: add at least one (hosts = [\"_\"] and a root serve every request)",
        ));
    }
    let mut sites = sites::build_with(site_list, groups, base, &loc).unwrap_or_else(|e| {
        errs.extend(e);
        Sites::default()
    });
    sites.trusted_proxies = trusted;
    let (max_bytes, max_entry) = match parsed.cache.take() {
        Some(c) => {
            let c = c.into_inner();
            for a in c.purge_from.iter().flatten() {
                match upstreams::Cidr::parse(a.get_ref()) {
                    Ok(x) => sites.cache_purge_from.push(x),
                    Err(why) => {
                        errs.push(loc.error(Some(a.span()), format!("`[cache] purge_from`: {why}")))
                    }
                }
            }
            if let Some(p) = &c.status_path {
                if !p.get_ref().starts_with('/') {
                    errs.push(
                        loc.error(Some(p.span()), "`[cache] status_path` must start with `/`"),
                    );
                }
                sites.cache_status_path = Some(p.get_ref().clone());
            }
            (
                c.max_bytes.map_or(256 << 20, |s| s.0 as usize),
                c.max_entry.map_or(8 << 20, |s| s.0 as usize),
            )
        }
        None => (256 << 20, 8 << 20),
    };
    sites.cache_max_bytes = max_bytes;
    sites.cache_max_entry = max_entry;
    if errs.is_empty() {
        Ok(Loaded {
            file: parsed,
            sites,
            text,
        })
    } else {
        Err(ConfigErrors(errs))
    }
}
