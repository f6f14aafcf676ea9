//! One load run end to end: check the target answers, start pinned threads, start them all at
//! once, show progress, sample the server's CPU around the measured window, join and merge.

use std::io::IsTerminal;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use thiserror::Error;

use crate::config::{RunConfig, Stop};
use crate::engine::{run_thread, Clock, Control};
use crate::procstat;
use crate::result::{Outside, RunResult};
use crate::target::Addr;
use crate::threshold;

/// Why a run could not complete.
#[derive(Debug, Error)]
pub enum RunError {
    /// The target did not accept a connection before the run.
    #[error("cannot connect to {addr}: {source}")]
    Unreachable {
        /// The address.
        addr: String,
        /// The connect error.
        source: std::io::Error,
    },
    /// A load thread could not run.
    #[error("load thread failed: {0}")]
    Thread(String),
    /// Not enough file descriptors for the connections asked for.
    #[error("{need} connections need more open files than the limit allows ({limit}); raise `ulimit -n`")]
    FdLimit {
        /// Descriptors needed.
        need: u64,
        /// The hard limit.
        limit: u64,
    },
    /// The server process could not be read.
    #[error(transparent)]
    Proc(#[from] procstat::ProcError),
}

/// Set by SIGINT: the run in progress stops early and still reports.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Route the first Ctrl-C to a clean early stop (a second one kills as usual).
fn install_sigint() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe;
        // SA_RESETHAND restores the default action after the first signal.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigint as *const () as usize;
            sa.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        }
    });
}

/// True once Ctrl-C was pressed during a run.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// How a run reports while it goes.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Label shown before the bar (e.g. the compare target name).
    pub label: String,
}

/// Check that the target accepts a connection within `timeout`.
pub fn preflight(addr: &Addr, timeout: Duration) -> Result<(), RunError> {
    let res = match addr {
        Addr::Tcp(a) => TcpStream::connect_timeout(a, timeout).map(drop),
        Addr::Unix(p) => UnixStream::connect(p).map(drop),
    };
    res.map_err(|source| RunError::Unreachable {
        addr: addr.to_string(),
        source,
    })
}

/// Raise the soft open-file limit so every connection (plus slack) fits.
fn ensure_fd_limit(connections: usize) -> Result<(), RunError> {
    let need = connections as u64 + 64;
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= need {
            return Ok(());
        }
        if lim.rlim_max < need {
            return Err(RunError::FdLimit {
                need: connections as u64,
                limit: lim.rlim_max,
            });
        }
        lim.rlim_cur = need;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    Ok(())
}

/// Run a load test.
pub fn run(cfg: &RunConfig, opts: &RunOptions) -> Result<RunResult, RunError> {
    ensure_fd_limit(cfg.connections)?;
    preflight(&cfg.requests.addr, cfg.timeout.min(Duration::from_secs(5)))?;
    if let Some(pid) = cfg.server_pid {
        procstat::read_stat(pid)?;
    }
    install_sigint();
    let cores = if cfg.pin {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    let plans = cfg.plan(&cores);
    let ctl = Control::new(plans.len());
    let clock = Clock::new();
    let shared = Arc::new(cfg.clone());
    let handles: Vec<_> = plans
        .into_iter()
        .map(|plan| {
            let cfg = Arc::clone(&shared);
            let ctl = Arc::clone(&ctl);
            std::thread::Builder::new()
                .name(format!("loadgen-{}", plan.index))
                .spawn(move || run_thread(&cfg, &plan, clock, &ctl))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| RunError::Thread(e.to_string()))?;

    ctl.ready.wait();
    if let Some(at) = cfg.start_at_unix_s {
        // Connections are open; start the schedule at the agreed wall-clock time (shards on
        // several machines start together, to the accuracy of their clocks).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if at > now {
            std::thread::sleep(Duration::from_secs_f64(at - now));
        }
    }
    let t0 = clock.now();
    ctl.t0_ns.store(t0, Ordering::Release);
    ctl.go.wait();

    let warmup_ns = cfg.warmup.as_nanos() as u64;
    let bar = progress_bar(cfg, opts);
    let mut server_start = None;
    let mut machine_start = None;
    let mut tcp_start = None;
    if warmup_ns == 0 {
        server_start = sample_server(cfg.server_pid);
        machine_start = sample_machine(&clock);
        tcp_start = procstat::read_tcp_snmp();
    }
    let mut warmup_sampled = warmup_ns == 0;
    loop {
        let all_done = ctl.finished.iter().all(|f| f.load(Ordering::Acquire));
        if all_done {
            break;
        }
        if interrupted() {
            ctl.stop.store(true, Ordering::SeqCst);
        }
        let now = clock.now();
        let mut sleep = Duration::from_millis(if interrupted() { 5 } else { 100 });
        if !warmup_sampled {
            let warm_end = t0 + warmup_ns;
            if now >= warm_end {
                server_start = sample_server(cfg.server_pid);
                machine_start = sample_machine(&clock);
                tcp_start = procstat::read_tcp_snmp();
                warmup_sampled = true;
            } else {
                sleep = sleep.min(Duration::from_nanos(warm_end - now));
            }
        }
        if let Some(bar) = &bar {
            let done: u64 = ctl
                .responses
                .iter()
                .map(|a| a.load(Ordering::Relaxed))
                .sum();
            let errs: u64 = ctl.errors.iter().map(|a| a.load(Ordering::Relaxed)).sum();
            match cfg.stop {
                Stop::Duration(_) => bar.set_position((now - t0) / 1_000_000),
                Stop::Count(_) => bar.set_position(done),
            }
            bar.set_message(format!("{done} responses, {errs} errors"));
        }
        std::thread::sleep(sleep);
    }
    let server_end = sample_server(cfg.server_pid);
    let machine_end = sample_machine(&clock);
    let tcp_end = procstat::read_tcp_snmp();
    let mut results = Vec::with_capacity(handles.len());
    for h in handles {
        results.push(
            h.join()
                .map_err(|_| RunError::Thread("a load thread panicked".into()))?,
        );
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(fatal) = results.iter().find_map(|r| r.fatal.clone()) {
        return Err(RunError::Thread(fatal));
    }
    let server_cpu_ns = match (server_start, server_end) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let outside = Outside {
        server_cpu_ns,
        // The threads switch windows at exactly t0 + warm-up; only the server CPU sample is
        // taken by this thread, as close to that moment as it wakes.
        warmup_ns,
        machine_window_ns: match (&machine_start, &machine_end) {
            (Some((a, _)), Some((b, _))) => b.saturating_sub(*a),
            _ => 0,
        },
        machine: match (machine_start, machine_end) {
            (Some((_, a)), Some((_, b))) => Some((a, b)),
            _ => None,
        },
        tcp: tcp_start.zip(tcp_end),
    };
    let mut result = RunResult::build(cfg, &results, &outside);
    result.thresholds = threshold::check_all(&cfg.thresholds, &result);
    if interrupted() {
        result.interrupted = true;
        result
            .warnings
            .push("interrupted (Ctrl-C): the run stopped early".to_string());
    }
    Ok(result)
}

fn sample_server(pid: Option<u32>) -> Option<u64> {
    procstat::tree_cpu_ns(pid?).ok()
}

/// Every core's /proc/stat line, with the time it was read (no /proc: no machine figures).
fn sample_machine(clock: &Clock) -> Option<(u64, Vec<(u32, procstat::CpuTicks)>)> {
    let m = procstat::read_machine().ok()?;
    Some((clock.now(), m))
}

fn progress_bar(cfg: &RunConfig, opts: &RunOptions) -> Option<ProgressBar> {
    if !opts.progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let (len, tmpl) = match cfg.stop {
        Stop::Duration(d) => (
            (d + cfg.warmup).as_millis() as u64,
            "{prefix}[{elapsed_precise}] {wide_bar} {msg}",
        ),
        Stop::Count(n) => (
            n,
            "{prefix}[{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        ),
    };
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(tmpl) {
        bar.set_style(style);
    }
    if !opts.label.is_empty() {
        bar.set_prefix(format!("{} ", opts.label));
    }
    Some(bar)
}
