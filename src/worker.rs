//! Spawning and pinning workers, binding their SO_REUSEPORT listeners, shutdown signalling.
//!
//! The main thread binds every listener first (so bind errors come out before any thread
//! starts), blocks SIGINT/SIGTERM (the workers inherit the mask), spawns one pinned thread per
//! worker, then waits for a signal. On a signal it writes every worker's shutdown eventfd and
//! joins them within the shutdown timeout. Workers share nothing after the hand-off.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use std::sync::Arc;

use crate::config::Config;
use crate::driver::{self, DriverError, Reload, WorkerCtx};
use crate::handler::Roots;
use crate::sys;

/// Listen backlog of each worker's socket (the kernel caps it at net.core.somaxconn).
pub const LISTEN_BACKLOG: i32 = 4096;

/// How long past `--shutdown-timeout` the main thread waits for workers before giving up.
pub const JOIN_GRACE: Duration = Duration::from_secs(2);

/// How often the main thread looks at its workers while waiting for a signal.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Why the server could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0} is already in use (pick another with --listen)")]
    AddrInUse(SocketAddr),
    #[error("permission denied binding {0} (ports below 1024 need root or CAP_NET_BIND_SERVICE)")]
    BindPermission(SocketAddr),
    #[error("cannot listen on {0}: the address is not available on this machine")]
    AddrNotAvailable(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot open root folder {path}: {source}")]
    Root {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("cannot set up worker {id}: {source}")]
    Setup { id: usize, source: io::Error },
    #[error("worker {id} failed: {source}")]
    Worker { id: usize, source: DriverError },
    #[error("worker {id} panicked")]
    Panicked { id: usize },
    #[error("{0} worker(s) did not stop within the shutdown timeout")]
    ShutdownTimeout(usize),
    #[error("a second signal arrived during shutdown; exiting without waiting for workers")]
    Forced,
}

/// Re-reads the config on SIGHUP: the new config, or every error as one line each.
pub type Reloader = Box<dyn FnMut() -> Result<Config, Vec<String>> + Send>;

/// Listeners bound and ready; nothing spawned yet.
pub struct Server {
    config: Config,
    listeners: Vec<TcpListener>,
    local: SocketAddr,
    reloader: Option<Reloader>,
}

/// Opens every root of `config.sites`, in order (`O_PATH | O_DIRECTORY`).
pub fn open_roots(config: &Config) -> Result<Roots, ServerError> {
    let mut fds = Vec::with_capacity(config.sites.roots.len());
    for path in &config.sites.roots {
        let fd = sys::open_dir_path(path).map_err(|e| ServerError::Root {
            path: path.clone(),
            source: e,
        })?;
        fds.push(fd);
    }
    Ok(Arc::from(fds))
}

/// Bind one SO_REUSEPORT listener on `addr`.
fn bind_one(addr: SocketAddr, config: &Config) -> Result<TcpListener, ServerError> {
    let map = |e: io::Error| match e.kind() {
        io::ErrorKind::AddrInUse => ServerError::AddrInUse(addr),
        io::ErrorKind::PermissionDenied => ServerError::BindPermission(addr),
        io::ErrorKind::AddrNotAvailable => ServerError::AddrNotAvailable(addr),
        _ => ServerError::Bind { addr, source: e },
    };
    let sock =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(map)?;
    sock.set_reuse_address(true).map_err(map)?;
    sock.set_reuse_port(true).map_err(map)?;
    sock.set_nonblocking(true).map_err(map)?;
    // Accepted sockets inherit TCP_NODELAY from the listener (one setsockopt per worker
    // instead of one per connection): responses are written whole, and a head followed by a
    // spliced body must not wait for a delayed ACK.
    sock.set_tcp_nodelay(true).map_err(map)?;
    // Inherited the same way. With the kernel default (no low-water mark) a splice or
    // sendfile of a large body queues megabytes of unsent data and returns; the kernel then
    // transmits it as the peer's ACKs open the window, in the context that processes those
    // ACKs: on loopback, the client's own core. Measured with wrk on a 10 MiB file this left
    // wrk 100% busy at 1.8 GB/s while the worker idled; with 16 KiB the worker pushes the
    // data itself (6.6-7.2 GB/s). See results/ and README for the runs.
    if config.notsent_lowat > 0 {
        sock.set_tcp_notsent_lowat(config.notsent_lowat)
            .map_err(map)?;
    }
    // A connection reaches accept with its request already in the socket: accepting it and
    // reading the request then take one wakeup of the worker instead of two, which is most of
    // what a client pays per new connection on loopback (connect scenario, loadgen: 51-53k
    // against 64-67k req/s, the worker's CPU time unchanged).
    if !config.defer_accept.is_zero() {
        sys::set_defer_accept(&sock, config.defer_accept).map_err(map)?;
    }
    sock.bind(&addr.into()).map_err(map)?;
    sock.listen(LISTEN_BACKLOG).map_err(map)?;
    Ok(sock.into())
}

/// Whether a socket other than ours already listens on `addr` (SO_REUSEPORT would otherwise
/// let us silently share a port with another process of the same user).
fn port_taken(addr: SocketAddr) -> bool {
    let Ok(sock) = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)) else {
        return false;
    };
    // No SO_REUSEPORT here: the bind fails if anyone holds the port.
    let _ = sock.set_reuse_address(true);
    sock.bind(&addr.into()).is_err()
}

impl Server {
    /// Bind `config.workers` listeners on `config.listen`. With port 0 the first listener
    /// picks the port and the rest join it.
    pub fn bind(config: &Config) -> Result<Server, ServerError> {
        let mut addr = config.listen;
        if addr.port() != 0 && port_taken(addr) {
            return Err(ServerError::AddrInUse(addr));
        }
        let mut listeners = Vec::with_capacity(config.workers);
        for _ in 0..config.workers.max(1) {
            let l = bind_one(addr, config)?;
            if addr.port() == 0 {
                addr = l
                    .local_addr()
                    .map_err(|e| ServerError::Bind { addr, source: e })?;
            }
            listeners.push(l);
        }
        Ok(Server {
            config: config.clone(),
            listeners,
            local: addr,
            reloader: None,
        })
    }

    /// What SIGHUP runs to get the new config (without one, SIGHUP only logs a line).
    pub fn set_reloader(&mut self, r: Reloader) {
        self.reloader = Some(r);
    }

    /// One server per listener, each with one worker: for hosts that run each worker in its
    /// own process (`ringd-wsgi` forks one per listener, before any thread starts).
    pub fn split(self) -> Vec<Server> {
        let mut config = self.config;
        config.workers = 1;
        self.listeners
            .into_iter()
            .map(|l| Server {
                config: config.clone(),
                listeners: vec![l],
                local: self.local,
                reloader: None,
            })
            .collect()
    }

    /// The address the listeners are bound to (the real port when `--listen` said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Spawn the workers, wait for SIGINT/SIGTERM (or a worker failing), shut down.
    pub fn run(mut self) -> Result<(), ServerError> {
        sys::block_shutdown_signals().map_err(|e| ServerError::Setup { id: 0, source: e })?;
        let cpus = sys::allowed_cpus();
        let roots = open_roots(&self.config)?;
        let reload = Arc::new(Reload::default());
        // Active health checks, off the request path; replaced on reload, stopped on return.
        let mut checker = crate::health::start(&self.config.sites.upstreams);
        let mut workers: Vec<(OwnedFd, JoinHandle<Result<(), DriverError>>)> = Vec::new();
        let mut start_err = None;
        // The workers' config names the bound port (CGI and WSGI tell apps SERVER_PORT); a
        // reload is still compared with the config as written (`listen` may say port 0).
        let mut bound = self.config.clone();
        bound.listen = self.local;
        for (id, listener) in self.listeners.into_iter().enumerate() {
            match spawn_worker(id, &bound, listener, &cpus, &roots, &reload) {
                Ok(w) => workers.push(w),
                Err(e) => {
                    start_err = Some(e);
                    break;
                }
            }
        }
        if start_err.is_none() {
            start_err = watch(
                &workers,
                &self.config,
                self.reloader.as_mut(),
                &reload,
                &mut checker,
            );
        }
        for (efd, _) in &workers {
            // A failed write means the worker has exited already; nothing to wake.
            let _ = sys::eventfd_write(efd.as_fd(), 1);
        }
        let deadline = Instant::now() + self.config.timeouts.shutdown + JOIN_GRACE;
        let result = join_all(workers, deadline);
        match start_err {
            Some(e) => Err(e),
            None => result,
        }
    }
}

/// Start worker `id`: its shutdown eventfd, then the pinned thread.
fn spawn_worker(
    id: usize,
    config: &Config,
    listener: TcpListener,
    cpus: &[usize],
    roots: &Roots,
    reload: &Arc<Reload>,
) -> Result<(OwnedFd, JoinHandle<Result<(), DriverError>>), ServerError> {
    let shutdown = sys::eventfd().map_err(|e| ServerError::Setup { id, source: e })?;
    let wake = shutdown
        .try_clone()
        .map_err(|e| ServerError::Setup { id, source: e })?;
    let ctx = WorkerCtx {
        id,
        config: config.clone(),
        listener,
        roots: roots.clone(),
        shutdown,
        reload: reload.clone(),
    };
    let core = (config.pin && !cpus.is_empty()).then(|| cpus[id % cpus.len()]);
    let handle = std::thread::Builder::new()
        .name(format!("ringd-w{id}"))
        .spawn(move || {
            if let Some(core) = core {
                // Pinning is an optimisation: a refusal (e.g. a changed cpuset) is not fatal.
                if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                    eprintln!("ringd: worker {id}: could not pin to CPU {core}; running unpinned");
                }
            }
            driver::run(ctx)
        })
        .map_err(|e| ServerError::Setup { id, source: e })?;
    Ok((wake, handle))
}

/// Wait for a shutdown signal, or for a worker that stops on its own (an error); reload the
/// config on SIGHUP.
fn watch(
    workers: &[(OwnedFd, JoinHandle<Result<(), DriverError>>)],
    config: &Config,
    mut reloader: Option<&mut Reloader>,
    reload: &Reload,
    checker: &mut Option<crate::health::Checker>,
) -> Option<ServerError> {
    loop {
        match sys::wait_shutdown_signal(WATCH_INTERVAL) {
            Ok(Some(libc::SIGHUP)) => {
                if let Some(upstreams) = do_reload(config, reloader.as_deref_mut(), reload) {
                    // The new config's groups, with their own health flags.
                    *checker = None;
                    *checker = crate::health::start(&upstreams);
                }
            }
            Ok(Some(_)) => return None,
            Ok(None) => {}
            Err(e) => return Some(ServerError::Setup { id: 0, source: e }),
        }
        if workers.iter().any(|(_, h)| h.is_finished()) {
            // Its error is collected by join_all; stop the others.
            return None;
        }
    }
}

/// SIGHUP: re-read the config; a valid one goes to every worker (at its next tick), an
/// invalid one changes nothing. Either way one line per outcome or error on stderr.
fn do_reload(
    running: &Config,
    reloader: Option<&mut Reloader>,
    reload: &Reload,
) -> Option<Vec<crate::config::upstreams::Upstream>> {
    let Some(reloader) = reloader else {
        eprintln!("ringd: SIGHUP: no config file to reload (started without --config)");
        return None;
    };
    let shown = running
        .config_file
        .as_deref()
        .map_or("config".into(), |p| p.display().to_string());
    match reloader() {
        Ok(new)
            if !new.sites.wsgi_apps().is_empty() && crate::driver::app::installed().is_none() =>
        {
            eprintln!(
                "ringd: reload failed, nothing changed: the new config has `wsgi` routes ({}), \
                 which only ringd-wsgi (the Python package) serves",
                new.sites.wsgi_apps()[0].1
            );
            None
        }
        Ok(new) if new.sites.has_cgi() && running.backend == crate::config::Backend::TokioUring => {
            eprintln!(
                "ringd: reload failed, nothing changed: the new config runs CGI scripts, which \
                 need --backend uring or epoll (this server runs {}; restart it to switch)",
                running.backend.name()
            );
            None
        }
        Ok(new) => {
            for (key, changed) in [
                ("listen", new.listen != running.listen),
                ("workers", new.workers != running.workers),
                ("backend", new.backend != running.backend),
                ("access_log", new.access_log != running.access_log),
                ("pipe_pool", new.pipe_pool != running.pipe_pool),
                ("pipe_size", new.pipe_size != running.pipe_size),
            ] {
                if changed {
                    eprintln!("ringd: reload: `{key}` changed; it is ignored until a restart");
                }
            }
            match open_roots(&new) {
                Ok(roots) => {
                    let (n, r) = (new.sites.sites.len(), new.sites.route_count());
                    let upstreams = new.sites.upstreams.clone();
                    // The old setup's renewal and ACME threads end with it; start the new one's.
                    if let Some(t) = &new.tls {
                        crate::tls::spawn_renewer(t);
                    }
                    reload.publish(new, roots);
                    eprintln!("ringd: reloaded {shown}: {n} site(s), {r} route(s)");
                    Some(upstreams)
                }
                Err(e) => {
                    eprintln!("ringd: reload failed, nothing changed: {e}");
                    None
                }
            }
        }
        Err(errors) => {
            // One write for all the lines: stderr is unbuffered, and a reader (a log shipper,
            // a test) should never see half a message.
            let mut msg = String::new();
            for e in &errors {
                msg.push_str(&format!("ringd: reload failed: {e}\n"));
            }
            msg.push_str(&format!(
                "ringd: reload failed, nothing changed ({} error(s))\n",
                errors.len()
            ));
            let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
            None
        }
    }
}

/// Join every worker by `deadline`; the first error wins.
fn join_all(
    mut workers: Vec<(OwnedFd, JoinHandle<Result<(), DriverError>>)>,
    deadline: Instant,
) -> Result<(), ServerError> {
    let mut first_err = None;
    let mut ids: Vec<usize> = (0..workers.len()).collect();
    while !workers.is_empty() {
        let mut i = 0;
        while i < workers.len() {
            if workers[i].1.is_finished() {
                let (_, h) = workers.swap_remove(i);
                let id = ids.swap_remove(i);
                let res = match h.join() {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(ServerError::Worker { id, source: e }),
                    Err(_) => Err(ServerError::Panicked { id }),
                };
                if let Err(e) = res {
                    first_err.get_or_insert(e);
                }
            } else {
                i += 1;
            }
        }
        if workers.is_empty() {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            first_err.get_or_insert(ServerError::ShutdownTimeout(workers.len()));
            break;
        }
        let wait = (deadline - now).min(Duration::from_millis(10));
        match sys::wait_shutdown_signal(wait) {
            Ok(Some(libc::SIGHUP)) => {}
            Ok(Some(_)) => {
                first_err.get_or_insert(ServerError::Forced);
                break;
            }
            _ => {}
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_workers_share_one_port() {
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            workers: 3,
            ..Config::default()
        };
        let s = Server::bind(&config).unwrap();
        let port = s.local_addr().port();
        assert_ne!(port, 0);
        for l in &s.listeners {
            assert_eq!(l.local_addr().unwrap().port(), port);
        }
    }

    #[test]
    fn port_in_use_is_reported() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config = Config {
            listen: other.local_addr().unwrap(),
            workers: 1,
            ..Config::default()
        };
        match Server::bind(&config) {
            Err(ServerError::AddrInUse(a)) => assert_eq!(a, config.listen),
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("bound a port that is in use"),
        }
    }

    /// The drivers rely on accepted sockets inheriting TCP_NODELAY and TCP_NOTSENT_LOWAT from
    /// the listener instead of setting them per connection: check that the kernel does so.
    #[test]
    fn accepted_sockets_inherit_nodelay_and_notsent_lowat() {
        for lowat in [0u32, 16 * 1024, 200_000] {
            let config = Config {
                listen: "127.0.0.1:0".parse().unwrap(),
                workers: 1,
                notsent_lowat: lowat,
                ..Config::default()
            };
            let s = Server::bind(&config).unwrap();
            // With TCP_DEFER_ACCEPT (the default) accept waits for the first byte.
            let mut client = std::net::TcpStream::connect(s.local_addr()).unwrap();
            std::io::Write::write_all(&mut client, b"G").unwrap();
            s.listeners[0].set_nonblocking(false).unwrap();
            let (conn, _) = s.listeners[0].accept().unwrap();
            let sock = socket2::SockRef::from(&conn);
            assert!(sock.tcp_nodelay().unwrap());
            // 0 reads back as 0: "not set here, use net.ipv4.tcp_notsent_lowat".
            assert_eq!(sock.tcp_notsent_lowat().unwrap(), lowat);
        }
    }

    /// `--defer-accept`: set on every listener (the kernel may round it up to its SYN-ACK
    /// retransmission schedule), absent with 0. (That a connection is accepted once its first
    /// byte arrives is what the inheritance test above relies on.)
    #[test]
    fn defer_accept_is_set_on_listeners() {
        for (wait, want_set) in [(Duration::from_secs(1), true), (Duration::ZERO, false)] {
            let config = Config {
                listen: "127.0.0.1:0".parse().unwrap(),
                workers: 2,
                defer_accept: wait,
                ..Config::default()
            };
            let s = Server::bind(&config).unwrap();
            for l in &s.listeners {
                let got = sys::defer_accept(l).unwrap();
                assert_eq!(got > 0, want_set, "defer {wait:?}: kernel reports {got}");
            }
        }
    }
}
