//! CGI processes, for the epoll and uring drivers alike: a script spawned in its own process
//! group with three non-blocking pipes; stdin gets the request body, stdout feeds the
//! exchange, stderr goes to ringd's error log line by line with the script's name. Finished,
//! timed-out or abandoned scripts are signalled (SIGTERM to the group, SIGKILL a second later)
//! and reaped from the tick: no zombie is left behind.
//!
//! The pipes are read and written here with plain non-blocking calls; how the driver learns
//! that a pipe that answered EAGAIN is ready again is its [`Watch`]: epoll registers each pipe
//! once, edge-triggered, under the connection's token ([`EpollWatch`]); the uring driver arms
//! a one-shot `PollAdd` on the pipe that blocked (`uring/cgi.rs`).

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::unix::pipe::{Receiver, Sender};
use mio::{Interest, Registry, Token};

use super::epoll_gw::UP_BIT;
use crate::gateway::proxy::Failure;
use crate::session::{Service, Session};

/// How long a script may outlive its response (or get after SIGTERM) before SIGKILL.
pub const GRACE: Duration = Duration::from_secs(1);
/// Longest stderr line kept (longer ones are cut).
const MAX_ERR_LINE: usize = 4096;

/// Which of a script's pipes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pipe {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
}

/// How the driver waits for a script's pipes.
pub trait Watch {
    /// A new script's pipe (already non-blocking): epoll registers it here.
    fn attach(&mut self, pipe: Pipe, src: &mut dyn Source) -> io::Result<()>;
    /// `fd` answered EAGAIN: wake the connection when it is ready (epoll's edge-triggered
    /// registration already does; uring arms a one-shot poll).
    fn blocked(&mut self, pipe: Pipe, fd: RawFd);
    /// The pipe is about to be closed: forget it.
    fn detach(&mut self, pipe: Pipe, src: &mut dyn Source);
}

/// The epoll driver's [`Watch`]: every pipe registered once, edge-triggered, under the client
/// connection's token with [`UP_BIT`] set.
pub struct EpollWatch<'a> {
    pub registry: &'a Registry,
    pub token: usize,
}

impl Watch for EpollWatch<'_> {
    fn attach(&mut self, pipe: Pipe, src: &mut dyn Source) -> io::Result<()> {
        let interest = match pipe {
            Pipe::Stdin => Interest::WRITABLE,
            Pipe::Stdout | Pipe::Stderr => Interest::READABLE,
        };
        self.registry
            .register(src, Token(self.token | UP_BIT), interest)
    }

    fn blocked(&mut self, _: Pipe, _: RawFd) {}

    fn detach(&mut self, _: Pipe, src: &mut dyn Source) {
        let _ = self.registry.deregister(src);
    }
}

/// A running script.
pub struct CgiProc {
    child: Child,
    stdin: Option<Sender>,
    stdout: Option<Receiver>,
    stderr: Option<Receiver>,
    err_line: Vec<u8>,
    name: String,
}

/// A script being put down: signalled at `since` (or not yet, when `term` is false).
pub struct Dying {
    child: Child,
    since: Instant,
    term: bool,
}

/// The worker's CGI bookkeeping: scripts alive (for the per-worker limit) and scripts being
/// reaped.
#[derive(Default)]
pub struct Procs {
    pub alive: usize,
    dying: Vec<Dying>,
}

/// When a failed spawn was last logged (by any worker), and how many failed since without a
/// line.
static SPAWN_LOG: std::sync::Mutex<(Option<Instant>, u64)> = std::sync::Mutex::new((None, 0));

/// At most one "cannot start" line per this long per worker: a script that cannot start
/// (fd limit, pipe budget, a bad interpreter) fails every request, and one line per request
/// would flood the log at the request rate.
const SPAWN_LOG_EVERY: Duration = Duration::from_secs(10);

impl Procs {
    /// One line for a failed spawn, rate-limited to one per [`SPAWN_LOG_EVERY`] across the
    /// workers; the next line says how many failures went unlogged.
    fn log_spawn_failure(name: &str, e: &io::Error, now: Instant) {
        let mut log = SPAWN_LOG.lock().unwrap_or_else(|p| p.into_inner());
        if log
            .0
            .is_some_and(|t| now.saturating_duration_since(t) < SPAWN_LOG_EVERY)
        {
            log.1 += 1;
            return;
        }
        let more = match std::mem::take(&mut log.1) {
            0 => String::new(),
            n => format!(" ({n} more failed to start since the last line)"),
        };
        let _ = io::stderr().write_all(
            format!(
                "ringd: cgi {name}: cannot start: {e}{more} (logged at most every {}s)\n",
                SPAWN_LOG_EVERY.as_secs()
            )
            .as_bytes(),
        );
        log.0 = Some(now);
    }

    /// Signals and reaps finished scripts; call from the tick.
    pub fn reap(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.dying.len() {
            let d = &mut self.dying[i];
            if let Ok(Some(_)) | Err(_) = d.child.try_wait() {
                self.dying.swap_remove(i);
                self.alive = self.alive.saturating_sub(1);
                continue;
            }
            let waited = now.saturating_duration_since(d.since);
            if !d.term && waited >= GRACE {
                signal_group(&d.child, libc::SIGTERM);
                d.term = true;
                d.since = now;
            } else if d.term && waited >= GRACE {
                signal_group(&d.child, libc::SIGKILL);
            }
            i += 1;
        }
    }

    /// Puts `p` down: at once (SIGTERM now) when `now_term`, else after a grace period.
    pub fn retire(&mut self, mut p: CgiProc, watch: &mut dyn Watch, now_term: bool, now: Instant) {
        p.close_pipes(watch);
        if let Ok(Some(_)) = p.child.try_wait() {
            self.alive = self.alive.saturating_sub(1);
            return;
        }
        if now_term {
            signal_group(&p.child, libc::SIGTERM);
        }
        self.dying.push(Dying {
            child: p.child,
            since: now,
            term: now_term,
        });
    }
}

/// SIGTERM/SIGKILL to the script's whole process group (it was started as its leader).
fn signal_group(child: &Child, sig: i32) {
    let pid = child.id() as i32;
    if pid > 0 {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is
        // involved. The group is the child's own (process_group(0) at spawn).
        unsafe { libc::kill(-pid, sig) };
    }
}

impl CgiProc {
    fn close_pipes(&mut self, watch: &mut dyn Watch) {
        if let Some(mut s) = self.stdin.take() {
            watch.detach(Pipe::Stdin, &mut s);
        }
        if let Some(mut s) = self.stdout.take() {
            watch.detach(Pipe::Stdout, &mut s);
        }
        if let Some(mut s) = self.stderr.take() {
            watch.detach(Pipe::Stderr, &mut s);
        }
    }

    /// Logs the script's complete stderr lines.
    fn log_stderr(&mut self, data: &[u8]) {
        for &b in data {
            if b == b'\n' {
                self.flush_err();
            } else if self.err_line.len() < MAX_ERR_LINE {
                self.err_line.push(b);
            }
        }
    }

    fn flush_err(&mut self) {
        if self.err_line.is_empty() {
            return;
        }
        let line = format!(
            "ringd: cgi {}: {}\n",
            self.name,
            String::from_utf8_lossy(&self.err_line).escape_debug()
        );
        let _ = io::stderr().write_all(line.as_bytes());
        self.err_line.clear();
    }
}

/// What driving a script needs from the worker.
pub struct Ctx<'a> {
    pub watch: &'a mut dyn Watch,
    pub procs: &'a mut Procs,
    /// Most scripts alive per worker; beyond it a request gets 503.
    pub max: usize,
}

/// Drives the CGI script of `session`'s exchange, if it has one: spawn, feed stdin, log
/// stderr, relay stdout, put the process down when done. Returns whether anything happened.
pub fn drive(
    slot: &mut Option<CgiProc>,
    session: &mut Session,
    svc: &mut Service,
    cx: &mut Ctx<'_>,
    buf: &mut [u8],
    now: Instant,
    budget: &mut usize,
) -> bool {
    let Some(x) = session.gateway() else {
        return false;
    };
    if x.cgi.is_none() {
        return false;
    }
    if x.finished().is_some() {
        if let Some(p) = slot.take() {
            // A failure (timeout, bad output) puts the script down at once.
            let failed = x.failure.is_some();
            cx.procs.retire(p, cx.watch, failed, now);
        }
        session.gw_release(svc, now);
        return true;
    }
    if let (Some(spec), None) = (x.spawn_spec(), slot.as_ref()) {
        if cx.procs.alive >= cx.max {
            // Scripts that ended since the last tick no longer count.
            cx.procs.reap(now);
        }
        if cx.procs.alive >= cx.max {
            session.gw_busy(svc, now);
            return true;
        }
        let spawned = Command::new(&spec.program)
            .env_clear()
            .envs(
                spec.env
                    .iter()
                    .map(|(k, v)| (k.as_str(), OsStr::from_bytes(v))),
            )
            .current_dir(&spec.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn();
        let name = spec.name.clone();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                Procs::log_spawn_failure(&name, &e, now);
                // Out of fds, pipes, memory or processes: the server is short of a resource
                // (503, try later); anything else is the script's fault (502).
                match e.raw_os_error() {
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN) => {
                        session.gw_busy(svc, now)
                    }
                    _ => session.gw_error(svc, Failure::Connect, now),
                }
                return true;
            }
        };
        cx.procs.alive += 1;
        let mut p = CgiProc {
            stdin: child.stdin.take().map(Sender::from),
            stdout: child.stdout.take().map(Receiver::from),
            stderr: child.stderr.take().map(Receiver::from),
            child,
            err_line: Vec::new(),
            name,
        };
        let mut ok = true;
        if let Some(s) = p.stdin.as_mut() {
            ok &= s.set_nonblocking(true).is_ok() && cx.watch.attach(Pipe::Stdin, s).is_ok();
        }
        if let Some(s) = p.stdout.as_mut() {
            ok &= s.set_nonblocking(true).is_ok() && cx.watch.attach(Pipe::Stdout, s).is_ok();
        }
        if let Some(s) = p.stderr.as_mut() {
            ok &= s.set_nonblocking(true).is_ok() && cx.watch.attach(Pipe::Stderr, s).is_ok();
        }
        if !ok {
            cx.procs.retire(p, cx.watch, true, now);
            session.gw_error(svc, Failure::Connect, now);
            return true;
        }
        if let Some(x) = session.gateway() {
            x.spawned(now);
        }
        *slot = Some(p);
    }
    let Some(p) = slot.as_mut() else {
        return false;
    };
    let mut progress = false;
    // stdin: the body, then EOF.
    while let Some(stdin) = p.stdin.as_mut() {
        let pending = session.gateway().map_or(0, |x| x.to_send().len());
        if pending == 0 {
            if let Some(mut s) = p.stdin.take() {
                cx.watch.detach(Pipe::Stdin, &mut s);
            }
            break;
        }
        if *budget == 0 {
            return true;
        }
        *budget -= 1;
        let res = {
            let x = session.gateway().expect("checked above");
            stdin.write(x.to_send())
        };
        match res {
            Ok(n) => {
                if let Some(x) = session.gateway() {
                    x.sent(n, now);
                }
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                cx.watch.blocked(Pipe::Stdin, stdin.as_raw_fd());
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                // The script does not read its input (EPIPE): fine, it answers without it.
                if let Some(x) = session.gateway() {
                    let rest = x.to_send().len();
                    x.sent(rest, now);
                }
                if let Some(mut s) = p.stdin.take() {
                    cx.watch.detach(Pipe::Stdin, &mut s);
                }
                break;
            }
        }
    }
    // stderr: to the error log.
    while let Some(err) = p.stderr.as_mut() {
        if *budget == 0 {
            return true;
        }
        *budget -= 1;
        match err.read(buf) {
            Ok(0) => {
                p.flush_err();
                if let Some(mut s) = p.stderr.take() {
                    cx.watch.detach(Pipe::Stderr, &mut s);
                }
            }
            Ok(n) => {
                let data = buf[..n].to_vec();
                p.log_stderr(&data);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                cx.watch.blocked(Pipe::Stderr, err.as_raw_fd());
                break;
            }
            Err(_) => break,
        }
    }
    // stdout: the response, while the client keeps up.
    if p.stdout.is_some() && session.gw_wants_read() {
        if *budget == 0 {
            return true;
        }
        *budget -= 1;
        let res = p.stdout.as_mut().map(|o| o.read(buf));
        match res {
            Some(Ok(0)) => {
                if let Some(mut s) = p.stdout.take() {
                    cx.watch.detach(Pipe::Stdout, &mut s);
                }
                session.gw_eof(svc, now);
                return true;
            }
            Some(Ok(n)) => {
                session.gw_feed(svc, &buf[..n], now);
                return true;
            }
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Some(o) = p.stdout.as_ref() {
                    cx.watch.blocked(Pipe::Stdout, o.as_raw_fd());
                }
            }
            Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => return true,
            Some(Err(_)) => {
                session.gw_error(svc, Failure::Cut, now);
                return true;
            }
            None => {}
        }
    }
    progress
}
