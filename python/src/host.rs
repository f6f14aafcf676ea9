//! Flags, listeners, and one worker process's life: import the app, start the app threads,
//! run ringd's worker loop (GIL released), watch for requests past `--timeout`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use pyo3::exceptions::{PyRuntimeError, PySystemExit};
use pyo3::prelude::*;

use ringd::config::{Backend, Config};
use ringd::driver::app::AppQueue;
use ringd::worker::Server;

use crate::app;

const EXAMPLES: &str = "\
Examples:
  ringd-wsgi app:application                     serve app.py's `application` on 127.0.0.1:8000
  ringd-wsgi hello:app --bind 0.0.0.0:8000 --workers 4 --threads 2
  ringd-wsgi mysite.wsgi:application --chdir mysite    a Django project (its generated wsgi.py)
  ringd-wsgi --config ringd.toml                 static files, proxy routes and `wsgi` routes

Signals: SIGTERM/SIGINT stop gracefully; SIGHUP restarts every worker, which imports the app
code anew (a graceful reload; connections queue in the listeners meanwhile).";

/// ringd-wsgi: serve a WSGI app (Flask, Django, ...) with ringd's HTTP/1.1 core.
///
/// Forks --workers processes; in each, ringd's I/O thread (which never holds the GIL) hands
/// requests to --threads Python threads over a bounded queue.
#[derive(Debug, Parser)]
#[command(name = "ringd-wsgi", version, about, long_about, after_help = EXAMPLES)]
pub struct Args {
    /// The app: MODULE:CALLABLE, imported from the current folder (or --chdir). Example:
    /// `mysite.wsgi:application`.
    #[arg(value_name = "MODULE:CALLABLE", required_unless_present = "config")]
    pub app: Option<String>,
    /// Address to listen on. Example: `--bind 0.0.0.0:8000`.
    #[arg(
        long,
        short = 'b',
        value_name = "ADDR",
        default_value = "127.0.0.1:8000"
    )]
    pub bind: SocketAddr,
    /// Worker processes (each with its own I/O thread and app threads). Example: `--workers 4`.
    #[arg(long, short = 'w', value_name = "N", default_value_t = 1)]
    pub workers: usize,
    /// Python threads per worker that run the app. Example: `--threads 8`.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,
    /// Change to DIR (and import from it) before loading the app. Example: `--chdir mysite`.
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,
    /// A request running longer than this gets its worker replaced (gunicorn's --timeout).
    /// Example: `--timeout 60s` (a bare number means seconds).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::cli::parse_duration)]
    pub timeout: Duration,
    /// A worker that has served this many requests is replaced gracefully (0: never).
    /// Example: `--max-requests 10000`.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_requests: u64,
    /// Largest request body (413 beyond). Bodies are streamed: the app is called once the
    /// head is in and `wsgi.input` reads the body as it arrives (at most 256 KiB read ahead of
    /// the app), so this bounds the size, not memory. Example: `--max-body 100M`.
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = crate::cli::parse_size)]
    pub max_body: u64,
    /// Serve the sites of a ringd config file; its `wsgi = { app = ... }` routes run here.
    /// Example: `--config ringd.toml`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Append an access log (combined format) to FILE. Example: `--access-log access.log`.
    #[arg(long, value_name = "FILE")]
    pub access_log: Option<PathBuf>,
    /// Each worker's I/O loop: `auto` (uring where the kernel allows io_uring, else epoll,
    /// saying why), `uring` or `epoll`. Example: `--backend epoll`.
    #[arg(long, value_name = "BACKEND", default_value = "auto", value_parser = ["auto", "uring", "epoll"])]
    pub backend: String,
}

/// The I/O loop `--backend` names (auto: uring where io_uring works here).
fn backend_of(args: &Args) -> Result<Backend, String> {
    match args.backend.as_str() {
        "epoll" => Ok(Backend::Epoll),
        "uring" => ringd::driver::check_available(Backend::Uring)
            .map(|()| Backend::Uring)
            .map_err(|e| format!("--backend uring: {e}")),
        _ => match ringd::driver::check_available(Backend::Uring) {
            Ok(()) => Ok(Backend::Uring),
            Err(e) => {
                eprintln!("ringd-wsgi: --backend auto: {e}; using the epoll backend");
                Ok(Backend::Epoll)
            }
        },
    }
}

/// The bound listeners and settings, between `prepare` and the forks.
#[pyclass]
pub struct Master {
    servers: Mutex<Vec<Option<Server>>>,
    apps: Vec<String>,
    threads: usize,
    timeout: Duration,
    max_requests: u64,
    #[pyo3(get)]
    workers: usize,
    #[pyo3(get)]
    url: String,
}

fn config_of(args: &Args) -> Result<Config, String> {
    if let Some(file) = &args.config {
        let serve = crate::cli::ServeArgs::try_parse_config(file);
        let mut c = crate::cli::build_config(&serve, &[]).map_err(|e| e.join("\n"))?;
        c.listen = args.bind;
        c.workers = args.workers.max(1);
        c.backend = backend_of(args)?;
        c.pin = false;
        return Ok(c);
    }
    let spec = args.app.clone().unwrap_or_default();
    if !spec
        .split_once(':')
        .is_some_and(|(m, c)| !m.is_empty() && !c.is_empty())
    {
        return Err(format!(
            "{spec:?} is not MODULE:CALLABLE (e.g. `app:application`)"
        ));
    }
    let cwd = std::env::current_dir().map_err(|e| format!("no current folder: {e}"))?;
    let mut sites = ringd::config::sites::Sites::single(cwd.clone());
    sites.sites[0].root = None;
    sites.roots.clear();
    sites.implicit = false;
    sites.add_wsgi("/", &spec, args.timeout);
    let mut c = Config {
        root: cwd,
        listen: args.bind,
        workers: args.workers.max(1),
        backend: backend_of(args)?,
        pin: false,
        access_log: args.access_log.clone(),
        sites: Arc::new(sites),
        ..Config::default()
    };
    c.limits.max_body = args.max_body;
    Ok(c)
}

/// Which interpreter runs the app and what that means for parallelism, in one line: a GIL
/// build (parallel only across `--workers` processes), a free-threaded build (3.13t/3.14t:
/// `Py_GIL_DISABLED`) running without the GIL (app threads run in parallel: threads may
/// replace processes), or a free-threaded build whose GIL is on after all (`PYTHON_GIL=1`, or
/// an extension module, this one included, that does not declare itself free-threading safe:
/// importing it turns the GIL back on, with a RuntimeWarning).
fn python_mode(py: Python<'_>) -> String {
    let sys = py.import("sys").ok();
    let version = py
        .import("platform")
        .and_then(|p| p.call_method0("python_version"))
        .and_then(|v| v.extract::<String>())
        .unwrap_or_else(|_| "?".into());
    let ft_build = py
        .import("sysconfig")
        .and_then(|s| s.call_method1("get_config_var", ("Py_GIL_DISABLED",)))
        .and_then(|v| v.extract::<Option<i64>>())
        .ok()
        .flatten()
        .is_some_and(|v| v == 1);
    // `sys._is_gil_enabled()` exists from 3.13 on; before, the GIL is always on.
    let gil = sys
        .as_ref()
        .and_then(|s| s.call_method0("_is_gil_enabled").ok())
        .and_then(|v| v.extract::<bool>().ok())
        .unwrap_or(true);
    match (ft_build, gil) {
        (false, _) => format!(
            "Python {version} with the GIL: mode processes (app threads of a worker take \
             turns; run --workers N for parallel Python)"
        ),
        (true, false) => format!(
            "Python {version} free-threaded, GIL disabled: mode threads (the --threads app \
             threads of a worker run Python in parallel; --workers 1 --threads N may replace \
             processes)"
        ),
        (true, true) => format!(
            "Python {version} free-threaded build, but the GIL is enabled (PYTHON_GIL=1, or \
             an extension not declared free-threading safe re-enabled it): mode processes"
        ),
    }
}

/// Parses the flags (argv without the program name), builds the config and binds the
/// listeners; prints the URL. `--help` and errors raise SystemExit.
#[pyfunction]
pub fn prepare(py: Python<'_>, argv: Vec<String>) -> PyResult<Master> {
    let args = match Args::try_parse_from(std::iter::once("ringd-wsgi".to_string()).chain(argv)) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return Err(PySystemExit::new_err(e.exit_code()));
        }
    };
    if args.workers == 0 || args.threads == 0 {
        eprintln!("ringd-wsgi: --workers and --threads must be at least 1");
        return Err(PySystemExit::new_err(2));
    }
    if let Some(dir) = &args.chdir {
        if let Err(e) = std::env::set_current_dir(dir) {
            eprintln!("ringd-wsgi: --chdir {}: {e}", dir.display());
            return Err(PySystemExit::new_err(2));
        }
    }
    let config = match config_of(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringd-wsgi: {e}");
            return Err(PySystemExit::new_err(2));
        }
    };
    let mut apps: Vec<String> = Vec::new();
    for (a, _) in config.sites.wsgi_apps() {
        if !apps.iter().any(|x| **x == *a) {
            apps.push(a.to_string());
        }
    }
    if let Err(e) = ringd::sys::raise_nofile_limit() {
        eprintln!("ringd-wsgi: could not raise the open-file limit: {e}");
    }
    let server = Server::bind(&config).map_err(|e| {
        eprintln!("ringd-wsgi: {e}");
        PySystemExit::new_err(1)
    })?;
    let addr = server.local_addr();
    let url = format!("http://{addr}/");
    let what = if apps.is_empty() {
        "no WSGI app".to_string()
    } else {
        apps.join(", ")
    };
    println!(
        "ringd-wsgi: serving {what} on {url} ({} worker process{}, {} thread{} each, {})",
        config.workers,
        if config.workers == 1 { "" } else { "es" },
        args.threads,
        if args.threads == 1 { "" } else { "s" },
        config.backend.name(),
    );
    println!("ringd-wsgi: {}", python_mode(py));
    use std::io::Write;
    let _ = std::io::stdout().flush();
    Ok(Master {
        servers: Mutex::new(server.split().into_iter().map(Some).collect()),
        apps,
        threads: args.threads,
        timeout: args.timeout,
        max_requests: args.max_requests,
        workers: config.workers,
        url,
    })
}

/// Exit status of a worker whose app failed to import (the master stops instead of
/// respawning it forever).
pub const EXIT_BOOT: i32 = 3;
/// Exit status of a worker that ended itself because a request ran past `--timeout`.
pub const EXIT_TIMEOUT: i32 = 4;

#[pymethods]
impl Master {
    /// Runs worker `i` in this (forked) process until SIGTERM/SIGINT; returns its exit status.
    fn run_worker(&self, py: Python<'_>, i: usize) -> PyResult<i32> {
        let server = {
            let mut all = self.servers.lock().unwrap_or_else(|e| e.into_inner());
            let s = all.get_mut(i).and_then(Option::take);
            // The other workers' listeners are theirs (the master keeps its copies).
            all.clear();
            s
        };
        let Some(server) = server else {
            return Err(PyRuntimeError::new_err(format!("no worker {i}")));
        };
        // A worker never outlives its master (a killed master must not leave workers
        // holding the port).
        // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number touches no memory.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
        // SCHED_BATCH for this process's threads (inherited by every thread started below):
        // a woken thread does not preempt the running one, so on a shared core the I/O
        // thread and the app threads each run through their batch (every ready connection;
        // every queued call) instead of switching at each request and response.
        // RINGD_WSGI_SCHED=other keeps the default policy (for comparisons).
        if std::env::var("RINGD_WSGI_SCHED").map_or(true, |v| v != "other") {
            // SAFETY: sched_param is plain data, fully initialised; pid 0 is this thread.
            unsafe {
                let p = libc::sched_param { sched_priority: 0 };
                libc::sched_setscheduler(0, libc::SCHED_BATCH, &p);
            }
        }
        // Every thread started from here inherits the mask: SIGTERM/SIGINT/SIGHUP reach the
        // worker loop's sigtimedwait only.
        ringd::sys::block_shutdown_signals()
            .map_err(|e| PyRuntimeError::new_err(format!("signal mask: {e}")))?;
        let apps = match app::load(py, &self.apps) {
            Ok(a) => Arc::new(a),
            Err(e) => {
                e.print(py);
                eprintln!("ringd-wsgi: worker {i}: the app failed to load");
                return Ok(EXIT_BOOT);
            }
        };
        let queue = Arc::new(AppQueue::new(self.threads * 256));
        if ringd::driver::app::install(queue.clone()).is_err() {
            return Err(PyRuntimeError::new_err("an app queue is installed already"));
        }
        let start = Instant::now();
        let busy: Arc<Vec<AtomicU64>> =
            Arc::new((0..self.threads).map(|_| AtomicU64::new(0)).collect());
        let served = Arc::new(AtomicU64::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let env = app::Env::new(py, self.threads > 1, self.workers > 1)?;
        let env = Arc::new(env);
        for t in 0..self.threads {
            let (q, apps, busy, served, env) = (
                queue.clone(),
                apps.clone(),
                busy.clone(),
                served.clone(),
                env.clone(),
            );
            let max = self.max_requests;
            std::thread::Builder::new()
                .name(format!("ringd-app{t}"))
                .spawn(move || {
                    Python::attach(|py| {
                        app::thread(py, &q, &apps, &env, &busy[t], start, &served, max)
                    })
                })
                .map_err(|e| PyRuntimeError::new_err(format!("app thread: {e}")))?;
        }
        {
            let (busy, stopping) = (busy.clone(), stopping.clone());
            let timeout = self.timeout;
            std::thread::Builder::new()
                .name("ringd-watchdog".into())
                .spawn(move || watchdog(&busy, start, timeout, &stopping))
                .map_err(|e| PyRuntimeError::new_err(format!("watchdog: {e}")))?;
        }
        let res = py.detach(|| server.run());
        stopping.store(true, Ordering::Relaxed);
        queue.close();
        match res {
            Ok(()) => Ok(0),
            Err(e) => {
                eprintln!("ringd-wsgi: worker {i}: {e}");
                Ok(1)
            }
        }
    }
}

/// Ends the process when an app thread has been in one request past `timeout` (the master
/// replaces it, as gunicorn's arbiter does with a silent worker).
fn watchdog(busy: &[AtomicU64], start: Instant, timeout: Duration, stopping: &AtomicBool) {
    let step = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        std::thread::sleep(step);
        let now = start.elapsed().as_millis() as u64;
        for b in busy {
            let since = b.load(Ordering::Relaxed);
            if since != 0 && now.saturating_sub(since) > timeout.as_millis() as u64 {
                eprintln!(
                    "ringd-wsgi: worker {}: a request ran past --timeout ({:?}); exiting so \
                     the master replaces this worker",
                    std::process::id(),
                    timeout
                );
                // SAFETY: _exit ends the process at once; no memory is touched. The stuck
                // app thread cannot be stopped any other way (it may hold the GIL).
                unsafe { libc::_exit(EXIT_TIMEOUT) };
            }
        }
        if stopping.load(Ordering::Relaxed) {
            return;
        }
    }
}
