//! The WSGI source's plumbing: a bounded queue of calls from the worker's I/O thread to the
//! app threads (which live in the `ringd-wsgi` Python package and hold the GIL only while
//! they run Python), and each call's reply: the app's response as bytes (an HTTP/1.1 head,
//! then body chunks), handed back through a per-call `Flow` and an eventfd that wakes the
//! worker's loop (epoll's `mio::Waker`; the uring driver polls a plain eventfd). The I/O thread never blocks on either and never touches
//! Python; an app thread blocks (GIL released) when the client is more than
//! [`FLOW_BYTES`] behind.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use crate::gateway::proxy::Failure;
use crate::gateway::wsgi::Call;
use crate::session::{Service, Session};

/// Most response bytes an app thread queues for one call before it waits for the client.
pub const FLOW_BYTES: usize = 1 << 20;

/// Most request body bytes handed to a call ahead of what the app has read.
pub const INPUT_AHEAD: usize = 256 * 1024;

/// What an app thread sends back for a call.
#[derive(Debug)]
pub enum Msg {
    /// Response bytes (the head first, then body chunks).
    Data(Vec<u8>),
    /// Body bytes that are `len` bytes of a file from `off`: sent by sendfile, never copied
    /// through Python (`wsgi.file_wrapper`).
    File(Arc<std::os::fd::OwnedFd>, u64, u64),
    /// The response is complete.
    End,
    /// The app failed after its head went out (the client connection is cut), or before
    /// (then the app side has sent its own 500 instead).
    Fail(&'static str),
}

#[derive(Default)]
struct FlowState {
    msgs: VecDeque<Msg>,
    queued: usize,
    /// The client is gone, or the request was abandoned: stop producing.
    gone: bool,
    /// Request body bytes handed over and not read by the app yet.
    input: VecDeque<u8>,
    /// The whole body has been handed over.
    input_eof: bool,
    /// The app has asked for body bytes (not yet seen by the worker: `asked`), and whether it
    /// ever did.
    asked: bool,
    read_once: bool,
    /// The worker held bytes back because `input` was full: the reader says when it drains.
    input_full: bool,
}

/// One call's reply channel.
#[derive(Default)]
pub struct Flow {
    st: Mutex<FlowState>,
    cv: Condvar,
}

impl Flow {
    fn pop(&self) -> Option<Msg> {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        let m = st.msgs.pop_front()?;
        if let Msg::Data(d) = &m {
            st.queued -= d.len();
            if st.queued < FLOW_BYTES {
                self.cv.notify_all();
            }
        }
        Some(m)
    }

    fn cancel(&self) {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        st.gone = true;
        st.msgs.clear();
        st.input.clear();
        self.cv.notify_all();
    }

    /// Hands request body bytes to the app, as many as fit under [`INPUT_AHEAD`]; returns how
    /// many were taken.
    fn push_input(&self, data: &[u8]) -> usize {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        if st.gone {
            // Nobody will read them: taken (and dropped) so the client is not held up.
            return data.len();
        }
        let room = INPUT_AHEAD.saturating_sub(st.input.len());
        let n = room.min(data.len());
        st.input_full = n < data.len();
        if n > 0 {
            let wake = st.input.is_empty();
            st.input.extend(&data[..n]);
            if wake {
                self.cv.notify_all();
            }
        }
        n
    }

    /// The whole request body has been handed over.
    fn end_input(&self) {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        if !st.input_eof {
            st.input_eof = true;
            self.cv.notify_all();
        }
    }

    /// Whether the app asked for body bytes since the last call (the first time, or after
    /// draining a full buffer).
    fn take_asked(&self) -> bool {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut st.asked)
    }
}

/// The client went away (or the worker is stopping): the app should stop and `close()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// How news wakes the worker's loop.
enum Waker {
    /// epoll: mio's waker, registered with the worker's `Poll`.
    Mio(mio::Waker),
    /// uring: an eventfd the driver keeps a multishot poll on.
    EventFd(std::os::fd::OwnedFd),
}

/// Tells one worker's loop which calls have news.
pub struct Notify {
    ready: Mutex<Vec<(usize, u64)>>,
    waker: Waker,
}

impl Notify {
    pub fn new(waker: mio::Waker) -> Notify {
        Notify {
            ready: Mutex::new(Vec::new()),
            waker: Waker::Mio(waker),
        }
    }

    /// News wakes the loop by adding to eventfd `fd` (which the driver polls, through a dup).
    pub fn with_eventfd(fd: std::os::fd::OwnedFd) -> Notify {
        Notify {
            ready: Mutex::new(Vec::new()),
            waker: Waker::EventFd(fd),
        }
    }

    /// The calls with news since the last drain: (connection slot, call serial).
    pub fn drain(&self, into: &mut Vec<(usize, u64)>) {
        let mut r = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        into.append(&mut r);
    }

    fn post(&self, at: (usize, u64)) {
        let mut r = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        let first = r.is_empty();
        r.push(at);
        drop(r);
        // One wake-up per batch: the loop drains the whole list.
        if first {
            match &self.waker {
                Waker::Mio(w) => {
                    let _ = w.wake();
                }
                Waker::EventFd(fd) => {
                    use std::os::fd::AsFd;
                    let _ = crate::sys::eventfd_write(fd.as_fd(), 1);
                }
            }
        }
    }
}

/// Where an app thread sends one call's response.
pub struct Reply {
    flow: Arc<Flow>,
    notify: Arc<Notify>,
    at: (usize, u64),
}

impl Reply {
    /// Queues `m`; with `Data`, first waits (blocking: release the GIL around it) while the
    /// client is [`FLOW_BYTES`] behind. Err when the client is gone.
    pub fn send(&self, m: Msg) -> Result<(), Gone> {
        let mut st = self.flow.st.lock().unwrap_or_else(|e| e.into_inner());
        if let Msg::Data(d) = &m {
            while st.queued >= FLOW_BYTES && !st.gone {
                st = self.flow.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            st.queued += d.len();
        }
        if st.gone {
            return Err(Gone);
        }
        st.msgs.push_back(m);
        drop(st);
        self.notify.post(self.at);
        Ok(())
    }

    /// Whether sending could block now (so the caller releases the GIL only when it may).
    pub fn would_wait(&self) -> bool {
        let st = self.flow.st.lock().unwrap_or_else(|e| e.into_inner());
        st.queued >= FLOW_BYTES && !st.gone
    }

    /// Whether the client is gone.
    pub fn gone(&self) -> bool {
        self.flow.st.lock().unwrap_or_else(|e| e.into_inner()).gone
    }

    /// Request body bytes for `wsgi.input`: up to `max` of those that have arrived, appended
    /// to `out` (one copy, straight from the queue), blocking (release the GIL around it)
    /// until at least one has or the body is at its end (then none: Ok(0)). Err when the
    /// client is gone (it broke off mid-body, or the call was abandoned).
    pub fn read_input(&self, max: usize, out: &mut Vec<u8>) -> Result<usize, Gone> {
        let mut st = self.flow.st.lock().unwrap_or_else(|e| e.into_inner());
        let mut post = false;
        if !st.read_once {
            // The first read: the worker may owe the client a 100 (Continue). Not when the
            // whole body is here already (then no 100 is due, and no wake-up is spent).
            st.read_once = true;
            if !st.input_eof {
                st.asked = true;
                post = true;
            }
        }
        loop {
            if st.gone {
                return Err(Gone);
            }
            if !st.input.is_empty() || st.input_eof || max == 0 {
                break;
            }
            if post {
                post = false;
                drop(st);
                self.notify.post(self.at);
                st = self.flow.st.lock().unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st = self.flow.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        let n = max.min(st.input.len());
        let (a, b) = st.input.as_slices();
        let from_a = n.min(a.len());
        out.extend_from_slice(&a[..from_a]);
        out.extend_from_slice(&b[..n - from_a]);
        st.input.drain(..n);
        if st.input_full && st.input.len() < INPUT_AHEAD / 2 {
            // The worker stopped handing bytes over: tell it there is room again.
            st.input_full = false;
            st.asked = true;
            post = true;
        }
        drop(st);
        if post {
            self.notify.post(self.at);
        }
        Ok(n)
    }

    /// Whether `read_input` could block now.
    pub fn input_would_wait(&self) -> bool {
        let st = self.flow.st.lock().unwrap_or_else(|e| e.into_inner());
        st.input.is_empty() && !st.input_eof && !st.gone
    }
}

/// One call for an app thread.
pub struct Job {
    pub call: Box<Call>,
    pub reply: Arc<Reply>,
}

/// The calls waiting for an app thread (one queue per process: every app thread takes from
/// it). Bounded: a full queue answers 503 at once rather than letting requests wait unseen.
pub struct AppQueue {
    /// The calls, whether closed, and how many app threads wait for one (a push wakes one
    /// only then: no futex call while they are all busy).
    st: Mutex<(VecDeque<Job>, bool, usize)>,
    cv: Condvar,
    cap: usize,
}

impl AppQueue {
    pub fn new(cap: usize) -> AppQueue {
        AppQueue {
            st: Mutex::new((VecDeque::new(), false, 0)),
            cv: Condvar::new(),
            cap: cap.max(1),
        }
    }

    fn push(&self, job: Job) -> Result<(), Job> {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        if st.1 || st.0.len() >= self.cap {
            return Err(job);
        }
        st.0.push_back(job);
        let idle = st.2 > 0;
        drop(st);
        if idle {
            self.cv.notify_one();
        }
        Ok(())
    }

    /// The next call, blocking until there is one; None once the queue is closed.
    pub fn pop(&self) -> Option<Job> {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(j) = st.0.pop_front() {
                return Some(j);
            }
            if st.1 {
                return None;
            }
            st.2 += 1;
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            st.2 -= 1;
        }
    }

    /// No more calls: waiting app threads get None (calls still queued are dropped, and their
    /// clients' connections close).
    pub fn close(&self) {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        st.1 = true;
        for j in st.0.drain(..) {
            j.reply.flow.cancel();
        }
        drop(st);
        self.cv.notify_all();
    }
}

static QUEUE: OnceLock<Arc<AppQueue>> = OnceLock::new();

/// Makes `q` this process's app queue (the Python package does, before the workers start).
/// Without one, a WSGI route answers 502.
pub fn install(q: Arc<AppQueue>) -> Result<(), Arc<AppQueue>> {
    QUEUE.set(q)
}

/// This process's app queue, if an app host installed one.
pub fn installed() -> Option<&'static Arc<AppQueue>> {
    QUEUE.get()
}

/// A connection's call in flight.
pub struct AppCall {
    flow: Arc<Flow>,
    pub serial: u64,
}

impl AppCall {
    /// The client is gone (or the exchange ended): the app thread stops producing.
    pub fn cancel(&self) {
        self.flow.cancel();
    }
}

/// What driving a call needs from the worker.
pub struct Ctx<'a> {
    pub notify: Option<&'a Arc<Notify>>,
    /// The connection's slot (its token).
    pub token: usize,
    /// The worker's call counter (serials tell a call's news from a later one's).
    pub serial: &'a mut u64,
}

/// Drives the WSGI call of `session`'s exchange, if it has one: queue it, relay what the app
/// sent while the client keeps up, release it when done. Returns whether anything happened.
pub fn drive(
    slot: &mut Option<AppCall>,
    session: &mut Session,
    svc: &mut Service,
    cx: &mut Ctx<'_>,
    now: Instant,
) -> bool {
    let Some(x) = session.gateway() else {
        return false;
    };
    if !x.is_app() {
        return false;
    }
    if x.finished().is_some() {
        if let Some(c) = slot.take() {
            c.cancel();
        }
        session.gw_release(svc, now);
        return true;
    }
    if let Some(call) = x.take_call() {
        let (Some(q), Some(notify)) = (installed(), cx.notify) else {
            session.gw_error(svc, Failure::Connect, now);
            return true;
        };
        *cx.serial += 1;
        let flow = Arc::new(Flow::default());
        let job = Job {
            call,
            reply: Arc::new(Reply {
                flow: flow.clone(),
                notify: notify.clone(),
                at: (cx.token, *cx.serial),
            }),
        };
        if q.push(job).is_err() {
            session.gw_busy(svc, now);
            return true;
        }
        if let Some(x) = session.gateway() {
            x.spawned(now);
        }
        *slot = Some(AppCall {
            flow,
            serial: *cx.serial,
        });
    }
    let Some(c) = slot.as_ref() else {
        return false;
    };
    let mut progress = false;
    // The request body, as it arrives, for `wsgi.input` (bounded ahead of the app's reads).
    if let Some(x) = session.gateway() {
        if x.streams_body() {
            let data = x.to_send();
            if !data.is_empty() {
                let n = c.flow.push_input(data);
                if n > 0 {
                    x.sent(n, now);
                    progress = true;
                }
            }
            if x.body_complete() && x.backlog() == 0 {
                c.flow.end_input();
            }
        }
    }
    if c.flow.take_asked() && session.gw_wants_body(svc, now) {
        progress = true;
    }
    while session.gw_wants_read() {
        match c.flow.pop() {
            None => break,
            Some(Msg::Data(d)) => {
                session.gw_feed(svc, &d, now);
                progress = true;
            }
            Some(Msg::File(fd, off, len)) => {
                session.gw_file(svc, &fd, off, len, now);
                progress = true;
            }
            Some(Msg::End) => {
                session.gw_eof(svc, now);
                return true;
            }
            Some(Msg::Fail(why)) => {
                session.gw_error(svc, Failure::Bad(why), now);
                return true;
            }
        }
    }
    progress
}
