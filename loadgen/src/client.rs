//! The state machine of one thread's connections, driven by completions: what to do when a
//! connect, receive or send completes, which requests are due and on which connection they go,
//! timeouts, reconnects and error accounting. It queues submission entries; `engine.rs` owns
//! the ring and the clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::sync::atomic::Ordering;

use io_uring::squeue;

use crate::bufring::BufRing;
use crate::config::{RunConfig, Stop, ThreadPlan};
use crate::conn::{Conn, ConnState};
use crate::engine::{buffer_id, is_final, sqe, ud, Control, RECV_BGID};
use crate::parse::Response;
use crate::record::Recorder;
use crate::schedule::{Arrival, OpenSchedule, Ramp, Rng, Stages};
use crate::stats::{ErrorClass, ThreadResult};
use crate::target::{Addr, RequestSet};

/// What a completion handler needs besides the client: the receive buffers and the time.
pub struct Ctx<'a> {
    /// Receive buffers (read in place, then recycled).
    pub bufs: &'a mut BufRing,
    /// Time of this completion pass (ns).
    pub now: u64,
}

/// Most consecutive connect failures that lengthen the back-off (1 ms doubling to ~0.5 s).
const MAX_BACKOFF_SHIFT: u32 = 9;

/// How a slow reader (`--read-rate`) reads: one receive of at most `chunk` bytes, then none until
/// the bytes read so far fit the rate.
#[derive(Clone, Copy, Debug)]
struct SlowRead {
    rate: u64,
    chunk: u32,
}

/// One thread's connections and everything that decides what they do.
pub struct Client {
    conns: Vec<Conn>,
    set: RequestSet,
    rng: Rng,
    addr: Box<socket2::SockAddr>,
    domain: libc::c_int,
    tcp: bool,
    pipeline: usize,
    timeout_ns: u64,
    rate: Option<f64>,
    arrival: Arrival,
    plan: ThreadPlan,
    sched: Option<OpenSchedule>,
    slow: Option<SlowRead>,
    /// Slow readers waiting for their next receive: (when, connection, generation).
    parked: BinaryHeap<Reverse<(u64, u32, u32)>>,
    stages: Option<std::sync::Arc<Stages>>,
    ready: VecDeque<u32>,
    dirty: Vec<u32>,
    /// Submission entries waiting to go into the ring.
    pub backlog: Vec<squeue::Entry>,
    rec: Recorder,
    warmup_ns: u64,
    duration_ns: Option<u64>,
    end: Option<u64>,
    count: Option<u64>,
    /// Measured requests handed out (warm-up ones excluded): what `-n` counts.
    issued: u64,
    /// All requests handed out.
    issued_all: u64,
    /// Requests answered or failed.
    resolved: u64,
    /// End of the warm-up (ns).
    warmup_end: u64,
    /// Last time a response completed or a connection opened (ns).
    last_progress: u64,
    /// A counted run gave up: no connection could be made for a whole `--timeout`.
    gave_up: bool,
    /// `https://`: the client configuration and the name to verify.
    tls: Option<(
        std::sync::Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// A TLS error was printed already (once per thread).
    tls_said: bool,
    running: bool,
    ops: u64,
    index: usize,
}

impl Client {
    /// Connection slots and settings for one thread.
    pub fn new(cfg: &RunConfig, plan: &ThreadPlan) -> io::Result<Client> {
        let set = cfg.requests.clone();
        let (addr, domain, tcp) = match &set.addr {
            Addr::Tcp(a) => {
                let sa = socket2::SockAddr::from(*a);
                let domain = if a.is_ipv4() {
                    libc::AF_INET
                } else {
                    libc::AF_INET6
                };
                (sa, domain, true)
            }
            Addr::Unix(p) => (socket2::SockAddr::unix(p)?, libc::AF_UNIX, false),
        };
        let tls = match (&cfg.tls, &set.tls) {
            (Some(c), Some(name)) => Some((
                c.clone(),
                crate::tls::server_name(name)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            )),
            _ => None,
        };
        let conns = (0..plan.connections)
            .map(|_| Conn::new(cfg.pipeline, set.max_len(), set.no_body))
            .collect();
        let duration_ns = match cfg.stop {
            Stop::Duration(d) => Some(d.as_nanos() as u64),
            Stop::Count(_) => None,
        };
        Ok(Client {
            conns,
            rng: Rng::new(plan.seed),
            set,
            addr: Box::new(addr),
            domain,
            tcp,
            pipeline: cfg.pipeline.max(1),
            timeout_ns: cfg.timeout.as_nanos() as u64,
            rate: plan.rate,
            arrival: cfg.arrival,
            plan: plan.clone(),
            sched: None,
            slow: cfg.read_rate.map(|rate| SlowRead {
                rate,
                chunk: (rate / 10).clamp(64, crate::engine::RECV_BUF_SIZE as u64) as u32,
            }),
            parked: BinaryHeap::new(),
            stages: cfg.stages.clone(),
            ready: VecDeque::with_capacity(plan.connections),
            dirty: Vec::with_capacity(plan.connections),
            backlog: Vec::with_capacity(plan.connections * 3 + 16),
            rec: Recorder::new(cfg.warmup.is_zero()),
            warmup_ns: cfg.warmup.as_nanos() as u64,
            duration_ns,
            end: None,
            count: plan.count,
            issued: 0,
            issued_all: 0,
            resolved: 0,
            warmup_end: 0,
            last_progress: 0,
            gave_up: false,
            running: false,
            ops: 0,
            index: plan.index,
            tls,
            tls_said: false,
        })
    }

    /// Start connecting every connection.
    pub fn start_all(&mut self, now: u64) {
        for i in 0..self.conns.len() {
            self.start_connect(i, now);
        }
    }

    /// Some connection is still connecting.
    pub fn any_connecting(&self) -> bool {
        self.conns.iter().any(|c| c.state == ConnState::Connecting)
    }

    /// Operations the kernel has not finished.
    pub fn ops_pending(&self) -> u64 {
        self.ops
    }

    /// Begin the run at `t0`.
    pub fn begin(&mut self, t0: u64, now: u64) {
        self.running = true;
        self.rec.begin(t0, self.warmup_ns);
        self.warmup_end = t0 + self.warmup_ns;
        self.last_progress = now;
        self.end = self.duration_ns.map(|d| t0 + self.warmup_ns + d);
        if let Some(stages) = &self.stages {
            let ramp = Ramp {
                stages: std::sync::Arc::clone(stages),
                share: self.plan.share,
                phase: self.plan.phase,
            };
            self.sched = Some(OpenSchedule::ramped(ramp, t0, self.arrival, self.plan.seed));
        } else if let Some(rate) = self.rate {
            self.sched = Some(OpenSchedule::new(
                rate,
                t0 + self.plan.start_offset_ns,
                self.arrival,
                self.plan.seed,
            ));
        }
        for i in 0..self.conns.len() {
            if self.conns[i].state == ConnState::Open {
                self.available(i, now);
            }
        }
    }

    #[inline]
    fn can_issue(&self) -> bool {
        self.running && self.count.is_none_or(|c| self.issued < c)
    }

    /// The duration (if any) has passed.
    #[inline]
    pub fn past_end(&self, now: u64) -> bool {
        self.end.is_some_and(|end| now >= end)
    }

    /// The run is over: the duration has passed, or every counted request is resolved.
    pub fn finished(&self, now: u64) -> bool {
        match (self.end, self.count) {
            (Some(end), _) => now >= end,
            (None, Some(c)) => {
                self.gave_up || (self.issued >= c && self.resolved >= self.issued_all)
            }
            (None, None) => true,
        }
    }

    /// Connection `i` can take requests: fill it (closed loop) or queue it (open loop).
    #[inline]
    fn available(&mut self, i: usize, now: u64) {
        if self.sched.is_none() {
            while self.conns[i].accepts() && self.can_issue() {
                self.assign(i, now);
            }
        } else {
            let c = &mut self.conns[i];
            if c.accepts() && !c.in_ready {
                c.in_ready = true;
                self.ready.push_back(i as u32);
            }
        }
    }

    #[inline]
    fn assign(&mut self, i: usize, intended: u64) {
        let req = self.set.pick(&mut self.rng);
        let c = &mut self.conns[i];
        if c.stage_request(intended, req, &self.set.reqs[req as usize]) {
            self.issued_all += 1;
            if intended >= self.warmup_end {
                self.issued += 1;
            }
            if !c.in_dirty {
                c.in_dirty = true;
                self.dirty.push(i as u32);
            }
        }
    }

    /// Queue the receive of connection `i`: multishot, or one bounded read for a slow reader.
    fn arm_recv(&mut self, i: usize) {
        let c = &self.conns[i];
        let ud = ud::encode(ud::RECV, i as u32, c.gen);
        self.backlog.push(match self.slow {
            None => sqe::recv_multi(c.fd, RECV_BGID, ud),
            Some(s) => sqe::recv_limited(c.fd, RECV_BGID, s.chunk, ud),
        });
        self.ops += 1;
    }

    /// Slow readers whose next read is due get it.
    #[inline]
    pub fn wake_readers(&mut self, now: u64) {
        while let Some(&Reverse((at, i, gen))) = self.parked.peek() {
            if at > now {
                break;
            }
            self.parked.pop();
            let c = &self.conns[i as usize];
            if c.gen == gen && c.state == ConnState::Open {
                self.arm_recv(i as usize);
            }
        }
    }

    /// Open loop: hand every request that is due to a connection with room.
    #[inline]
    pub fn dispatch(&mut self, now: u64) {
        let Some(sched) = &self.sched else { return };
        if sched.peek() > now {
            return;
        }
        while self.can_issue() {
            if self.sched.as_ref().is_none_or(|s| s.peek() > now) {
                break;
            }
            let Some(i) = self.pop_ready() else { break };
            let Some(sched) = self.sched.as_mut() else {
                break;
            };
            let intended = sched.take();
            self.assign(i, intended);
            if self.conns[i].accepts() {
                self.conns[i].in_ready = true;
                self.ready.push_back(i as u32);
            }
        }
    }

    fn pop_ready(&mut self) -> Option<usize> {
        while let Some(i) = self.ready.pop_front() {
            let c = &mut self.conns[i as usize];
            c.in_ready = false;
            if c.accepts() {
                return Some(i as usize);
            }
        }
        None
    }

    /// Queue a send on every connection with staged requests and no send in flight.
    #[inline]
    pub fn flush_sends(&mut self, now: u64) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            self.conns[i as usize].in_dirty = false;
            self.try_send(i as usize, now);
        }
        dirty.clear();
        self.dirty = dirty;
    }

    #[inline]
    fn try_send(&mut self, i: usize, now: u64) {
        let c = &mut self.conns[i];
        if c.state != ConnState::Open {
            return;
        }
        let n = if c.tls.is_some() {
            c.take_batch_tls(now)
        } else {
            c.take_batch(now)
        };
        if n == 0 {
            return;
        }
        let len = c.inflight.len();
        for k in len - n..len {
            let lag = now.saturating_sub(c.inflight.get(k).intended);
            self.rec.lag(now, lag);
        }
        self.rec.sent(now, n as u64);
        let c = &mut self.conns[i];
        if !c.send_busy {
            return; // TLS: held back until the handshake is done
        }
        self.backlog.push(sqe::send(
            c.fd,
            c.out.as_ptr(),
            c.out.len(),
            ud::encode(ud::SEND, i as u32, c.gen),
        ));
        self.ops += 1;
    }

    fn mark_dirty(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if !c.in_dirty && c.staged > 0 {
            c.in_dirty = true;
            self.dirty.push(i as u32);
        }
    }

    /// The earliest time the loop must wake without a completion.
    #[inline]
    pub fn next_deadline(&self, next_tick: u64) -> u64 {
        let mut d = next_tick;
        if let Some(end) = self.end {
            d = d.min(end);
        }
        if let Some(s) = &self.sched {
            if !self.ready.is_empty() && self.can_issue() {
                d = d.min(s.peek());
            }
        }
        if let Some(Reverse((at, _, _))) = self.parked.peek() {
            d = d.min(*at);
        }
        if !self.dirty.is_empty() {
            d = 0;
        }
        d
    }

    /// Handle one completion.
    #[inline]
    pub fn on_cqe(&mut self, ctx: &mut Ctx<'_>, user_data: u64, res: i32, flags: u32) {
        let (kind, idx, gen) = ud::decode(user_data);
        let i = idx as usize;
        match kind {
            ud::RECV => self.on_recv(ctx, i, gen, res, flags),
            ud::SEND => self.on_send(i, gen, res, ctx.now),
            ud::CONNECT => self.on_connect(i, gen, res, ctx.now),
            _ => {}
        }
    }

    fn on_connect(&mut self, i: usize, gen: u32, res: i32, now: u64) {
        self.ops -= 1;
        let c = &mut self.conns[i];
        if !ud::same_gen(c.gen, gen) || c.state != ConnState::Connecting {
            return;
        }
        if res < 0 {
            self.connect_failed(now, ErrorClass::from_connect_errno(-res));
            self.close_fd(i);
            let c = &mut self.conns[i];
            c.connect_failures += 1;
            let backoff = 1_000_000u64 << c.connect_failures.min(MAX_BACKOFF_SHIFT);
            c.state = ConnState::Retry { at: now + backoff };
            return;
        }
        c.state = ConnState::Open;
        c.connect_failures = 0;
        if let Some((cfg, name)) = &self.tls {
            match rustls::ClientConnection::new(cfg.clone(), name.clone()) {
                Ok(t) => c.tls = Some(Box::new(t)),
                Err(e) => {
                    self.tls_error(&e);
                    self.fail(i, ErrorClass::Io, 1, now);
                    return;
                }
            }
        }
        self.last_progress = now;
        let took = self.conns[i].connect_start;
        let took = now.saturating_sub(took);
        self.arm_recv(i);
        self.send_tls(i);
        self.rec.connected(now, took);
        self.mark_dirty(i);
        if self.running {
            self.available(i, now);
        }
    }

    #[inline]
    fn on_recv(&mut self, ctx: &mut Ctx<'_>, i: usize, gen: u32, res: i32, flags: u32) {
        let now = ctx.now;
        let last = is_final(flags);
        if last {
            self.ops -= 1;
        }
        let current =
            ud::same_gen(self.conns[i].gen, gen) && self.conns[i].state == ConnState::Open;
        if let Some(bid) = buffer_id(flags) {
            if current && res > 0 {
                self.on_data(i, ctx.bufs.get(bid, res as usize), now);
            }
            ctx.bufs.recycle(bid);
        }
        if !last || !current || !ud::same_gen(self.conns[i].gen, gen) {
            return;
        }
        if self.conns[i].state != ConnState::Open {
            return;
        }
        // The receive ended on the live socket (a multishot one, or a slow reader's read).
        if let (Some(slow), true) = (self.slow, res > 0 || res == -libc::ENOBUFS) {
            // Next read when the bytes so far fit the rate (out of buffers: retry in 1 ms).
            let c = &mut self.conns[i];
            let wait = if res > 0 {
                res as u64 * 1_000_000_000 / slow.rate.max(1)
            } else {
                1_000_000
            };
            c.read_at = c.read_at.max(now) + wait;
            self.parked.push(Reverse((c.read_at, i as u32, c.gen)));
        } else if res == -libc::ENOBUFS || res > 0 {
            self.arm_recv(i);
        } else if res == 0 {
            self.on_eof(i, now);
        } else {
            self.fail(i, ErrorClass::from_io_errno(-res), 0, now);
        }
    }

    /// Received bytes: decrypted first on a TLS connection.
    #[inline]
    fn on_data(&mut self, i: usize, data: &[u8], now: u64) {
        self.rec.bytes(now, data.len() as u64);
        if self.conns[i].tls.is_none() {
            return self.on_plain(i, data, now);
        }
        let c = &mut self.conns[i];
        let mut plain = std::mem::take(&mut c.plain);
        plain.clear();
        let t = c.tls.as_mut().expect("checked");
        let mut rest = data;
        let mut err = None;
        while !rest.is_empty() {
            if let Err(e) = t.read_tls(&mut rest) {
                err = Some(rustls::Error::General(e.to_string()));
                break;
            }
            match t.process_new_packets() {
                Ok(st) => {
                    let n = st.plaintext_bytes_to_read();
                    if n > 0 {
                        let at = plain.len();
                        plain.resize(at + n, 0);
                        let got =
                            std::io::Read::read(&mut t.reader(), &mut plain[at..]).unwrap_or(0);
                        plain.truncate(at + got);
                    }
                }
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = err {
            self.conns[i].plain = plain;
            self.tls_error(&e);
            self.fail(i, ErrorClass::Io, 1, now);
            return;
        }
        if !plain.is_empty() {
            self.on_plain(i, &plain, now);
        }
        self.conns[i].plain = plain;
        self.send_tls(i);
    }

    /// Send what rustls has queued (handshake messages), when no send is in flight.
    fn send_tls(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.state != ConnState::Open || !c.take_tls_output() {
            return;
        }
        self.backlog.push(sqe::send(
            c.fd,
            c.out.as_ptr(),
            c.out.len(),
            ud::encode(ud::SEND, i as u32, c.gen),
        ));
        self.ops += 1;
    }

    /// Say the first TLS error of this thread on stderr (the report counts them as I/O).
    fn tls_error(&mut self, e: &rustls::Error) {
        if !self.tls_said {
            self.tls_said = true;
            eprintln!("loadgen: TLS error (counted as io errors): {e}");
        }
    }

    /// Parse received plaintext; complete responses; react to `Connection: close`.
    #[inline]
    fn on_plain(&mut self, i: usize, data: &[u8], now: u64) {
        let mut d = data;
        let mut close = false;
        let mut bad = false;
        while !d.is_empty() {
            let c = &mut self.conns[i];
            if c.parser.at_start() {
                match c.inflight.front() {
                    Some(f) if f.sent != 0 => {
                        if self.set.mixed_head {
                            c.parser.set_no_body(self.set.head[f.req as usize]);
                        }
                        self.rec.ttfb(now, now - f.sent)
                    }
                    _ => {
                        bad = true; // a response nobody asked for
                        break;
                    }
                }
            }
            let c = &mut self.conns[i];
            match c.parser.feed(d) {
                Ok(fed) => {
                    d = &d[fed.consumed..];
                    if let Some(r) = fed.done {
                        self.complete(i, r, now);
                        if r.close {
                            close = true;
                            break;
                        }
                    }
                }
                Err(_) => {
                    bad = true;
                    break;
                }
            }
        }
        if bad {
            self.fail(i, ErrorClass::Parse, 1, now);
        } else if close {
            // The server will close: keep what is unanswered for the next connection.
            self.reconnect(i, now);
        } else {
            self.available(i, now);
        }
    }

    #[inline]
    fn complete(&mut self, i: usize, r: Response, now: u64) {
        let c = &mut self.conns[i];
        let Some(e) = c.inflight.pop() else { return };
        self.resolved += 1;
        self.last_progress = now;
        let batch = (self.pipeline > 1 && e.batch_last).then(|| now.saturating_sub(e.sent));
        self.rec.response(
            e.intended,
            r.status,
            r.body_len,
            now.saturating_sub(e.intended),
            now.saturating_sub(e.sent),
            batch,
        );
    }

    fn on_eof(&mut self, i: usize, now: u64) {
        let c = &mut self.conns[i];
        match c.parser.eof() {
            Ok(Some(r)) => {
                // A close-delimited body ends here.
                self.complete(i, r, now);
                self.reconnect(i, now);
            }
            Ok(None) => {
                if self.conns[i].inflight.front().is_some_and(|f| f.sent != 0) {
                    self.fail(i, ErrorClass::Closed, 0, now);
                } else {
                    self.reconnect(i, now);
                }
            }
            Err(_) => self.fail(i, ErrorClass::Closed, 1, now),
        }
    }

    fn on_send(&mut self, i: usize, gen: u32, res: i32, now: u64) {
        self.ops -= 1;
        let c = &mut self.conns[i];
        c.send_busy = false;
        if !ud::same_gen(c.gen, gen) || c.state != ConnState::Open {
            c.out.clear();
            c.out_off = 0;
            self.mark_dirty(i);
            return;
        }
        if res <= 0 {
            let class = if res == 0 {
                ErrorClass::Closed
            } else {
                ErrorClass::from_io_errno(-res)
            };
            self.fail(i, class, 0, now);
            return;
        }
        c.out_off += res as usize;
        if c.out_off < c.out.len() {
            let rest = c.out.len() - c.out_off;
            // SAFETY: `out_off < out.len()`, so the pointer stays inside `out`.
            let ptr = unsafe { c.out.as_ptr().add(c.out_off) };
            c.send_busy = true;
            self.backlog.push(sqe::send(
                c.fd,
                ptr,
                rest,
                ud::encode(ud::SEND, i as u32, c.gen),
            ));
            self.ops += 1;
        } else {
            c.out.clear();
            c.out_off = 0;
            self.mark_dirty(i);
            self.send_tls(i);
        }
    }

    /// A connection failed: the requests it had sent fail with `class` (at least `min` errors
    /// are counted); unsent ones move to the next connection.
    fn fail(&mut self, i: usize, class: ErrorClass, min: u64, now: u64) {
        let c = &mut self.conns[i];
        let mut failed = 0u64;
        c.inflight.retain(|e| {
            let sent = e.sent != 0;
            failed += u64::from(sent);
            !sent
        });
        self.resolved += failed;
        self.rec.error(now, class, failed.max(min));
        self.reconnect(i, now);
    }

    /// A connect failed.
    fn connect_failed(&mut self, now: u64, class: ErrorClass) {
        self.rec.error(now, class, 1);
    }

    /// Replace the socket of connection `i`, keeping its unanswered requests.
    fn reconnect(&mut self, i: usize, now: u64) {
        self.close_fd(i);
        let c = &mut self.conns[i];
        c.restage(&self.set.reqs);
        let staged = c.staged > 0;
        if self.running && (staged || self.can_issue()) {
            self.start_connect(i, now);
        } else {
            self.conns[i].state = ConnState::Idle;
        }
    }

    fn close_fd(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.fd >= 0 {
            // SAFETY: `fd` is a socket this connection owns; shutdown ends its pending
            // operations (they complete and are recognised as stale by generation) and close
            // releases our descriptor; the kernel keeps its own file reference until they end.
            unsafe {
                libc::shutdown(c.fd, libc::SHUT_RDWR);
                libc::close(c.fd);
            }
        }
        c.fd = -1;
        c.gen = c.gen.wrapping_add(1);
        c.state = ConnState::Idle;
        c.tls = None;
    }

    fn start_connect(&mut self, i: usize, now: u64) {
        let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe { libc::socket(self.domain, ty, 0) };
        if fd < 0 {
            self.connect_failed(now, ErrorClass::Connect);
            let c = &mut self.conns[i];
            c.connect_failures += 1;
            let backoff = 1_000_000u64 << c.connect_failures.min(MAX_BACKOFF_SHIFT);
            c.state = ConnState::Retry { at: now + backoff };
            return;
        }
        let c = &mut self.conns[i];
        if self.tcp {
            let one: libc::c_int = 1;
            // SAFETY: setsockopt reads `one` (an int) for TCP_NODELAY on our own socket.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        if let Some(slow) = self.slow {
            // A small receive buffer, so the server feels the slow reader soon (the kernel
            // doubles it and keeps a floor of about 2 KiB).
            let size = slow.chunk.max(1024) as libc::c_int;
            // SAFETY: setsockopt reads `size` (an int) for SO_RCVBUF on our own socket.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        c.fd = fd;
        c.gen = c.gen.wrapping_add(1);
        c.read_at = 0;
        c.state = ConnState::Connecting;
        c.connect_start = now;
        self.backlog.push(sqe::connect(
            fd,
            &self.addr,
            ud::encode(ud::CONNECT, i as u32, c.gen),
        ));
        self.ops += 1;
    }

    /// Periodic work: timeouts, reconnects, the per-second interval and live progress.
    pub fn tick(&mut self, now: u64, ctl: &Control) {
        for i in 0..self.conns.len() {
            let c = &mut self.conns[i];
            match c.state {
                ConnState::Connecting if now.saturating_sub(c.connect_start) > self.timeout_ns => {
                    self.connect_failed(now, ErrorClass::Timeout);
                    self.close_fd(i);
                    self.conns[i].state = ConnState::Retry { at: now };
                }
                ConnState::Open => {
                    if let Some(f) = c.inflight.front() {
                        if f.sent != 0 && now.saturating_sub(f.sent) > self.timeout_ns {
                            self.fail(i, ErrorClass::Timeout, 1, now);
                        }
                    }
                }
                ConnState::Retry { at } if now >= at && self.running => self.start_connect(i, now),
                _ => {}
            }
            // Requests stuck on a connection that cannot send them time out too.
            let c = &mut self.conns[i];
            if c.state != ConnState::Open
                && c.inflight
                    .front()
                    .is_some_and(|f| now.saturating_sub(f.intended) > self.timeout_ns)
            {
                let before = c.inflight.len();
                let limit = self.timeout_ns;
                c.inflight
                    .retain(|e| now.saturating_sub(e.intended) <= limit);
                let gone = (before - c.inflight.len()) as u64;
                c.restage(&self.set.reqs);
                self.resolved += gone;
                self.rec.error(now, ErrorClass::Timeout, gone);
            }
        }
        // A counted run against a server that stopped accepting would otherwise wait forever.
        if self.count.is_some()
            && self.running
            && now.saturating_sub(self.last_progress) > self.timeout_ns
            && !self.conns.iter().any(|c| c.state == ConnState::Open)
        {
            self.gave_up = true;
        }
        self.rec.tick(now);
        ctl.responses[self.index].store(self.rec.total_responses(), Ordering::Relaxed);
        ctl.errors[self.index].store(self.rec.total_errors(), Ordering::Relaxed);
    }

    /// Shut every socket down so pending operations complete. Completions after this are
    /// ignored: requests still in flight at the end are neither answered nor failed.
    pub fn shutdown_all(&mut self) {
        self.running = false;
        for c in &mut self.conns {
            c.state = ConnState::Idle;
            if c.fd >= 0 {
                // SAFETY: shutdown on a socket we own; it stays open until `close_all`.
                unsafe {
                    libc::shutdown(c.fd, libc::SHUT_RDWR);
                }
            }
        }
    }

    /// Close every socket.
    pub fn close_all(&mut self) {
        for i in 0..self.conns.len() {
            self.close_fd(i);
        }
    }

    /// Hand the measurements back.
    pub fn into_result(mut self) -> ThreadResult {
        let scheduled = match (&mut self.sched, self.end) {
            (Some(s), Some(end)) => {
                while s.peek() < end {
                    s.take();
                }
                s.taken()
            }
            (Some(s), None) => s.taken(),
            (None, _) => 0,
        };
        let mut out = self.rec.into_result();
        out.scheduled = scheduled;
        out.gave_up = self.gave_up;
        out
    }
}
