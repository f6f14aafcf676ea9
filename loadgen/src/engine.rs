//! The per-thread client loop on io_uring: non-blocking connects, one multishot receive per
//! connection into a provided-buffer ring (parsed in place), and every send that is due queued
//! and submitted together in one `io_uring_enter` per pass. Threads share nothing; the loop
//! reads the clock once per pass and waits with a nanosecond timeout (or spins when the next
//! send is closer than the kernel's wake-up latency).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::bufring::BufRing;
use crate::client::{Client, Ctx};
use crate::config::{RunConfig, ThreadPlan};
use crate::stats::ThreadResult;

/// A monotonic nanosecond clock shared (by value) by all threads of a run.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Clock {
        Clock {
            base: Instant::now(),
        }
    }

    /// Nanoseconds since the clock's zero.
    #[inline]
    pub fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// How threads and the coordinating thread talk: start barriers, the start time, live progress
/// and an early stop.
#[derive(Debug)]
pub struct Control {
    /// Every thread has connected (or given up); passed by the coordinator too.
    pub ready: Barrier,
    /// The coordinator has set `t0_ns`.
    pub go: Barrier,
    /// Start of the run (ns on the shared clock).
    pub t0_ns: AtomicU64,
    /// Per thread: responses so far (all windows).
    pub responses: Vec<AtomicU64>,
    /// Per thread: failures so far.
    pub errors: Vec<AtomicU64>,
    /// Per thread: finished.
    pub finished: Vec<AtomicBool>,
    /// Ask every thread to stop now.
    pub stop: AtomicBool,
}

impl Control {
    /// Control block for `threads` threads.
    pub fn new(threads: usize) -> Arc<Control> {
        Arc::new(Control {
            ready: Barrier::new(threads + 1),
            go: Barrier::new(threads + 1),
            t0_ns: AtomicU64::new(0),
            responses: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            errors: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            finished: (0..threads).map(|_| AtomicBool::new(false)).collect(),
            stop: AtomicBool::new(false),
        })
    }
}

/// Size of each receive buffer.
pub const RECV_BUF_SIZE: usize = 16 * 1024;
/// Fewest / most receive buffers per thread.
const MIN_BUFS: usize = 64;
const MAX_BUFS: usize = 4096;
/// Waits shorter than this spin instead of sleeping in the kernel (ns).
const SPIN_NS: u64 = 20_000;
/// How often timeouts, retries, intervals and progress are looked at (ns).
pub const TICK_NS: u64 = 5_000_000;
/// How long the final quiesce waits for the kernel to finish with our buffers (ns).
const QUIESCE_NS: u64 = 1_000_000_000;
/// `IORING_ENTER_GETEVENTS` (the crate keeps its sys module private).
const IORING_ENTER_GETEVENTS: u32 = 1;
/// Buffer group id of the receive buffers.
const BGID: u16 = 7;

/// Run one thread of a load test: set up, connect, wait for the start, run, tear down.
/// Always passes both barriers of `ctl`, even when setup fails.
pub fn run_thread(cfg: &RunConfig, plan: &ThreadPlan, clock: Clock, ctl: &Control) -> ThreadResult {
    if let Some(core) = plan.core {
        core_affinity::set_for_current(core);
    }
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack; 1 ns makes the
    // kernel's timed waits wake on time instead of up to 50 µs late.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
    let mut engine = match Engine::new(cfg, plan, clock) {
        Ok(e) => e,
        Err(e) => {
            ctl.ready.wait();
            ctl.go.wait();
            ctl.finished[plan.index].store(true, Ordering::Release);
            return ThreadResult {
                fatal: Some(format!("io_uring setup failed: {e}")),
                ..Default::default()
            };
        }
    };
    let connect_deadline = clock.now() + cfg.timeout.as_nanos() as u64;
    let setup = engine.connect_all(connect_deadline);
    ctl.ready.wait();
    ctl.go.wait();
    let t0 = ctl.t0_ns.load(Ordering::Acquire);
    let cpu0 = thread_cpu_ns();
    let result = match setup.and_then(|_| engine.run(t0, ctl)) {
        Ok(()) => None,
        Err(e) => Some(format!("io_uring loop failed: {e}")),
    };
    let cpu1 = thread_cpu_ns();
    let wall = clock.now().saturating_sub(t0);
    let spin_ns = engine.spin_ns;
    engine.quiesce();
    let mut out = engine.core.into_result();
    out.spin_ns = spin_ns;
    out.cpu_user_ns = cpu1.0.saturating_sub(cpu0.0);
    out.cpu_sys_ns = cpu1.1.saturating_sub(cpu0.1);
    out.wall_ns = wall;
    out.fatal = result;
    ctl.finished[plan.index].store(true, Ordering::Release);
    out
}

/// This thread's (user, system) CPU time in ns.
pub fn thread_cpu_ns() -> (u64, u64) {
    // SAFETY: getrusage writes into the zeroed struct we pass; RUSAGE_THREAD is Linux-specific.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru
    };
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
    (ns(ru.ru_utime), ns(ru.ru_stime))
}

/// One thread's ring, receive buffers and connection state.
///
/// Field order matters: `ring` is dropped before `bufs` and `core`, whose memory (receive
/// buffers, send buffers, the connect address) the kernel may reference until the ring closes.
pub struct Engine {
    ring: IoUring,
    bufs: BufRing,
    core: Client,
    clock: Clock,
    /// Time spent spinning to pace sends (ns).
    spin_ns: u64,
}

impl Engine {
    /// Build the ring and buffers and the connection slots of one thread.
    pub fn new(cfg: &RunConfig, plan: &ThreadPlan, clock: Clock) -> io::Result<Engine> {
        let conns = plan.connections.max(1);
        let sq = (conns * 2 + 64).next_power_of_two().clamp(64, 4096) as u32;
        let nbufs = (conns * 2).next_power_of_two().clamp(MIN_BUFS, MAX_BUFS);
        let cq = (sq as usize * 4).max(nbufs * 2).next_power_of_two() as u32;
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(cq)
            .build(sq)
            .or_else(|_| IoUring::builder().setup_cqsize(cq).build(sq))?;
        let bufs = BufRing::new(&ring, nbufs as u16, RECV_BUF_SIZE, BGID)?;
        let core = Client::new(cfg, plan)?;
        Ok(Engine {
            ring,
            bufs,
            core,
            clock,
            spin_ns: 0,
        })
    }

    /// Connect every connection; returns when none is still connecting or at `deadline`.
    pub fn connect_all(&mut self, deadline: u64) -> io::Result<()> {
        let now = self.clock.now();
        self.core.start_all(now);
        loop {
            self.flush_backlog()?;
            let now = self.clock.now();
            if !self.core.any_connecting() || now >= deadline {
                return Ok(());
            }
            self.wait(deadline.min(now + TICK_NS), 1)?;
            let now = self.clock.now();
            self.reap(now);
        }
    }

    /// The measured run, from `t0` until the stop condition.
    pub fn run(&mut self, t0: u64, ctl: &Control) -> io::Result<()> {
        self.core.begin(t0, self.clock.now());
        let mut next_tick = t0 + TICK_NS;
        loop {
            let now = self.clock.now();
            // Check the deadline before reaping, so every counted response has a timestamp
            // inside the measured window.
            if self.core.past_end(now) {
                self.core.tick(now, ctl);
                return Ok(());
            }
            self.reap(now);
            if now >= next_tick {
                self.core.tick(now, ctl);
                next_tick = now + TICK_NS;
                if ctl.stop.load(Ordering::Relaxed) {
                    self.core.tick(now, ctl);
                    return Ok(());
                }
            }
            if self.core.finished(now) {
                self.core.tick(now, ctl);
                return Ok(());
            }
            self.core.wake_readers(now);
            self.core.dispatch(now);
            self.core.flush_sends(now);
            self.flush_backlog()?;
            let deadline = self.core.next_deadline(next_tick);
            self.wait(deadline, 1)?;
        }
    }

    /// Reap every available completion, then hand the receive buffers back.
    #[inline]
    fn reap(&mut self, now: u64) {
        let mut ctx = Ctx {
            bufs: &mut self.bufs,
            now,
        };
        for cqe in self.ring.completion() {
            self.core
                .on_cqe(&mut ctx, cqe.user_data(), cqe.result(), cqe.flags());
        }
        self.bufs.publish();
    }

    /// Move queued submissions into the ring, submitting whenever it fills (nothing is dropped).
    fn flush_backlog(&mut self) -> io::Result<()> {
        let pending = std::mem::take(&mut self.core.backlog);
        let mut i = 0;
        let mut result = Ok(());
        while i < pending.len() {
            {
                let mut sq = self.ring.submission();
                while i < pending.len() {
                    // SAFETY: every queued entry points at memory owned by this engine that
                    // outlives the operation: connection send buffers (not written while their
                    // send is in flight, freed only after the ring is dropped and quiesced), the
                    // boxed connect address, and the registered receive buffers.
                    if unsafe { sq.push(&pending[i]) }.is_err() {
                        break;
                    }
                    i += 1;
                }
            }
            if i < pending.len() {
                if let Err(e) = self.submit_retrying() {
                    result = Err(e);
                    break;
                }
            }
        }
        // Entries queued while reaping inside `submit_retrying` go after the ones pushed here.
        let mut pending = pending;
        pending.clear();
        pending.append(&mut self.core.backlog);
        self.core.backlog = pending;
        if !self.core.backlog.is_empty() && result.is_ok() {
            return self.flush_backlog();
        }
        result
    }

    fn submit_retrying(&mut self) -> io::Result<()> {
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // Completion queue overflowing: drain it, then retry.
                    let now = self.clock.now();
                    self.reap(now);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Submit what is queued and wait until `want` completions are available or `deadline`
    /// (ns on the clock). (Counting this pass's sends into `want`, since they usually complete
    /// during the submit, saved nothing measurable and would delay timestamps whenever a send
    /// does not complete inline, so the run loop waits for one.)
    fn wait(&mut self, deadline: u64, want: usize) -> io::Result<()> {
        let now = self.clock.now();
        if deadline <= now || self.ring.completion().len() >= want {
            return self.submit_retrying();
        }
        let left = deadline - now;
        if left < SPIN_NS {
            // Closer than the kernel's wake-up latency: spin (accounted apart, so pacing does
            // not read as saturation).
            self.submit_retrying()?;
            let mut before = self.ring.completion().len();
            let mut t_prev = self.clock.now();
            loop {
                // SAFETY: a plain io_uring_enter with no SQEs and no argument: only runs
                // deferred task work so completions become visible.
                let r = unsafe {
                    self.ring.submitter().enter::<libc::sigset_t>(
                        0,
                        0,
                        IORING_ENTER_GETEVENTS,
                        None,
                    )
                };
                if let Err(e) = r {
                    if e.raw_os_error() != Some(libc::EINTR) {
                        return Err(e);
                    }
                }
                let t = self.clock.now();
                let have = self.ring.completion().len();
                // Only turns that found nothing count as pacing spin; a turn that produced
                // completions did real work (deferred task work ran inside the enter).
                if have == before {
                    self.spin_ns += t.saturating_sub(t_prev);
                }
                before = have;
                t_prev = t;
                if have >= want || t >= deadline {
                    return Ok(());
                }
                std::hint::spin_loop();
            }
        }
        let ts = types::Timespec::new()
            .sec(left / 1_000_000_000)
            .nsec((left % 1_000_000_000) as u32);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Shut every socket down and wait (bounded) until the kernel has finished every operation
    /// that references our memory.
    pub fn quiesce(&mut self) {
        self.core.shutdown_all();
        let _ = self.flush_backlog();
        let end = self.clock.now() + QUIESCE_NS;
        while self.core.ops_pending() > 0 {
            let now = self.clock.now();
            if now >= end || self.wait(end.min(now + TICK_NS), 1).is_err() {
                break;
            }
            let now = self.clock.now();
            self.reap(now);
        }
        self.core.close_all();
    }
}

/// Operation kinds encoded in `user_data`.
pub mod ud {
    /// A connect.
    pub const CONNECT: u64 = 1;
    /// The multishot receive.
    pub const RECV: u64 = 2;
    /// A send.
    pub const SEND: u64 = 3;

    /// Encode kind, connection index and socket generation.
    #[inline]
    pub fn encode(kind: u64, idx: u32, gen: u32) -> u64 {
        (kind << 60) | ((gen as u64 & 0x0FFF_FFFF) << 32) | idx as u64
    }

    /// Decode into (kind, index, generation).
    #[inline]
    pub fn decode(ud: u64) -> (u64, u32, u32) {
        (ud >> 60, ud as u32, ((ud >> 32) & 0x0FFF_FFFF) as u32)
    }

    /// Compare a generation with one decoded from `user_data`.
    #[inline]
    pub fn same_gen(gen: u32, encoded: u32) -> bool {
        gen & 0x0FFF_FFFF == encoded
    }
}

/// Build the submission entries the core queues.
pub mod sqe {
    use super::*;

    /// Connect `fd` to the address at `addr`.
    pub fn connect(fd: i32, addr: &socket2::SockAddr, user_data: u64) -> squeue::Entry {
        opcode::Connect::new(types::Fd(fd), addr.as_ptr().cast(), addr.len())
            .build()
            .user_data(user_data)
    }

    /// Arm the multishot receive on `fd` from buffer group `bgid`.
    pub fn recv_multi(fd: i32, bgid: u16, user_data: u64) -> squeue::Entry {
        opcode::RecvMulti::new(types::Fd(fd), bgid)
            .build()
            .user_data(user_data)
    }

    /// One receive of at most `len` bytes into a buffer of group `bgid` (slow readers).
    pub fn recv_limited(fd: i32, bgid: u16, len: u32, user_data: u64) -> squeue::Entry {
        opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), len)
            .buf_group(bgid)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
            .user_data(user_data)
    }

    /// Send `len` bytes at `ptr`.
    pub fn send(fd: i32, ptr: *const u8, len: usize, user_data: u64) -> squeue::Entry {
        opcode::Send::new(types::Fd(fd), ptr, len as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data)
    }
}

/// Whether a completion is the last one its (multishot) operation will post.
#[inline]
pub fn is_final(flags: u32) -> bool {
    !cqueue::more(flags)
}

/// The buffer a receive completion used, if any.
#[inline]
pub fn buffer_id(flags: u32) -> Option<u16> {
    cqueue::buffer_select(flags)
}

/// The receive buffer group id.
pub const RECV_BGID: u16 = BGID;
