//! PEP 3333 on an app thread: the environ, `start_response` (late, with `exc_info`, and its
//! `write()`), `wsgi.input`, `wsgi.file_wrapper`, the iteration with `close()` always called,
//! and the response handed back to the worker as an HTTP/1.1 head plus body chunks. The head
//! goes out with the first non-empty chunk (or at the end); the Content-Length an app sets
//! is never exceeded (ringd's exchange cuts the connection when it gets fewer bytes).

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use pyo3::exceptions::{PyAssertionError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use ringd::driver::app::{AppQueue, Gone, Job, Msg, Reply};

/// The imported apps by `module:callable`.
pub type Apps = HashMap<String, Py<PyAny>>;

/// Imports every app (`module:callable`, the callable may be a dotted attribute path).
pub fn load(py: Python<'_>, specs: &[String]) -> PyResult<Apps> {
    let sys = py.import("sys")?;
    let path = sys.getattr("path")?;
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| ".".into());
    // As gunicorn does: the current folder first, so `app:application` finds ./app.py.
    if !path.contains(&cwd)? {
        path.call_method1("insert", (0, cwd))?;
    }
    let mut apps = Apps::new();
    for spec in specs {
        let (module, attr) = spec.split_once(':').unwrap_or((spec, "application"));
        let mut obj: Bound<'_, PyAny> = py.import(module)?.into_any();
        for part in attr.split('.') {
            obj = obj.getattr(part)?;
        }
        if !obj.is_callable() {
            return Err(PyTypeError::new_err(format!("{spec} is not callable")));
        }
        apps.insert(spec.clone(), obj.unbind());
    }
    Ok(apps)
}

/// What every environ shares: built once, copied per request.
pub struct Env {
    base: Py<PyDict>,
}

impl Env {
    pub fn new(py: Python<'_>, multithread: bool, multiprocess: bool) -> PyResult<Env> {
        let d = PyDict::new(py);
        d.set_item("wsgi.version", (1, 0))?;
        d.set_item("wsgi.url_scheme", "http")?;
        d.set_item("wsgi.errors", py.import("sys")?.getattr("stderr")?)?;
        d.set_item("wsgi.multithread", multithread)?;
        d.set_item("wsgi.multiprocess", multiprocess)?;
        d.set_item("wsgi.run_once", false)?;
        d.set_item("wsgi.input_terminated", true)?;
        d.set_item("wsgi.file_wrapper", py.get_type::<FileWrapper>())?;
        d.set_item(
            "SERVER_SOFTWARE",
            concat!("ringd-wsgi/", env!("CARGO_PKG_VERSION")),
        )?;
        Ok(Env { base: d.unbind() })
    }
}

/// One app thread: takes calls until the queue closes. `busy` holds when the current call
/// began (ms since `start`, plus one; 0: idle) for the watchdog.
#[allow(clippy::too_many_arguments)]
pub fn thread(
    py: Python<'_>,
    q: &AppQueue,
    apps: &Apps,
    env: &Env,
    busy: &AtomicU64,
    start: Instant,
    served: &AtomicU64,
    max_requests: u64,
) {
    loop {
        let Some(job) = py.detach(|| q.pop()) else {
            return;
        };
        busy.store(start.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
        let reply = job.reply.clone();
        // A bug of ours must not take the thread (and the worker's capacity) with it: the
        // request fails, the thread goes on.
        let ran =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(py, apps, env, job)));
        if ran.is_err() {
            eprintln!(
                "ringd-wsgi: an app thread panicked in ringd-wsgi itself; the request failed"
            );
            let _ = reply.send(Msg::Fail("ringd-wsgi panicked"));
        }
        busy.store(0, Ordering::Relaxed);
        let n = served.fetch_add(1, Ordering::Relaxed) + 1;
        if max_requests > 0 && n == max_requests {
            eprintln!(
                "ringd-wsgi: worker {}: served --max-requests {max_requests}; restarting",
                std::process::id()
            );
            // SAFETY: kill(2) to this process; the worker loop takes SIGTERM and stops
            // gracefully (the master starts a new worker).
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        }
    }
}

/// Bytes as a latin-1 `str` (PEP 3333's "native string" for environ values).
fn latin1<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyString> {
    if b.is_ascii() {
        // SAFETY-free fast path: ASCII is valid UTF-8.
        PyString::new(py, std::str::from_utf8(b).unwrap_or_default())
    } else {
        let s: String = b.iter().map(|&c| char::from(c)).collect();
        PyString::new(py, &s)
    }
}

/// The response as the app builds it.
struct Resp {
    status: Option<String>,
    headers: Vec<(String, String)>,
    /// The app's Content-Length, if it set one.
    cl: Option<u64>,
    head_sent: bool,
    sent: u64,
    reply: Arc<Reply>,
    /// Logged once: the app wrote past its Content-Length.
    overrun: bool,
    what: String,
}

impl Resp {
    /// Sends `data` (with the head first, once): at most the app's Content-Length.
    fn emit(&mut self, py: Python<'_>, data: &[u8], end: bool) -> PyResult<()> {
        let mut out = Vec::new();
        if !self.head_sent {
            let Some(status) = self.status.as_deref() else {
                return Err(PyAssertionError::new_err(
                    "the app sent body bytes before calling start_response",
                ));
            };
            let headers = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
            out = ringd::gateway::wsgi::head(status, headers).map_err(PyValueError::new_err)?;
            self.head_sent = true;
        }
        let mut data = data;
        if let Some(cl) = self.cl {
            let room = cl.saturating_sub(self.sent);
            if data.len() as u64 > room {
                if !self.overrun {
                    self.overrun = true;
                    eprintln!(
                        "ringd-wsgi: {}: the app sent more than its Content-Length ({cl}); \
                         the rest is dropped",
                        self.what
                    );
                }
                data = &data[..room as usize];
            }
        }
        self.sent += data.len() as u64;
        if out.is_empty() {
            out = data.to_vec();
        } else {
            out.extend_from_slice(data);
        }
        let reply = self.reply.clone();
        let send = move || -> Result<(), Gone> {
            if !out.is_empty() {
                reply.send(Msg::Data(out))?;
            }
            if end {
                reply.send(Msg::End)?;
            }
            Ok(())
        };
        let res = if self.reply.would_wait() {
            py.detach(send)
        } else {
            send()
        };
        res.map_err(|Gone| PyOSError::new_err("the client disconnected"))
    }
}

/// `start_response(status, response_headers, exc_info=None)`; returns `write`.
#[pyclass(module = "ringd_wsgi")]
pub struct StartResponse {
    resp: Resp,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__<'py>(
        mut slf: PyRefMut<'py, Self>,
        status: Bound<'py, PyAny>,
        headers: Bound<'py, PyAny>,
        exc_info: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        if let Some(e) = &exc_info {
            if slf.resp.head_sent {
                // PEP 3333: too late to change the response; re-raise the app's error.
                return Err(PyErr::from_value(e.get_item(1)?));
            }
        } else if slf.resp.status.is_some() {
            return Err(PyAssertionError::new_err(
                "start_response called a second time without exc_info",
            ));
        }
        let status: String = status
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("status must be a str"))?
            .to_string();
        let list = headers
            .cast::<PyList>()
            .map_err(|_| PyTypeError::new_err("response_headers must be a list"))?;
        let mut hs = Vec::with_capacity(list.len());
        let mut cl = None;
        for item in list.iter() {
            let t = item
                .cast::<PyTuple>()
                .map_err(|_| PyTypeError::new_err("each header must be a (name, value) tuple"))?;
            if t.len() != 2 {
                return Err(PyTypeError::new_err(
                    "each header must be a (name, value) tuple",
                ));
            }
            let n: String = t.get_item(0)?.cast::<PyString>()?.to_string();
            let v: String = t.get_item(1)?.cast::<PyString>()?.to_string();
            if n.eq_ignore_ascii_case("content-length") {
                cl = Some(v.trim().parse::<u64>().map_err(|_| {
                    PyValueError::new_err(format!("Content-Length {v:?} is not a number"))
                })?);
            }
            hs.push((n, v));
        }
        slf.resp.status = Some(status);
        slf.resp.headers = hs;
        slf.resp.cl = cl;
        let write = slf.into_pyobject(headers.py())?.getattr("write")?;
        Ok(write)
    }

    /// The legacy `write(data)` callable.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let b = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() takes bytes"))?;
        let bytes = b.as_bytes();
        if bytes.is_empty() && self.resp.head_sent {
            return Ok(());
        }
        self.resp.emit(py, bytes, false)
    }
}

/// `wsgi.input`: the request body as a binary file, streamed: a read blocks (GIL released)
/// until ringd's I/O thread has the bytes, and returns b"" at the body's end (Content-Length,
/// or a chunked body's last chunk: `wsgi.input_terminated`). A client that breaks off
/// mid-body makes the read raise `OSError`.
#[pyclass(module = "ringd_wsgi")]
pub struct Input {
    /// Bytes received and not read yet (`buf[pos..]`).
    buf: Vec<u8>,
    pos: usize,
    /// Where the rest comes from; None once the body's end is in `buf`.
    src: Option<Arc<Reply>>,
}

/// Bytes asked of the I/O thread at a time.
const READ_STEP: usize = 64 * 1024;

impl Input {
    fn avail(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Gets more bytes into `buf` (blocking, GIL released, only when it must); false at the
    /// end of the body.
    fn fill(&mut self, py: Python<'_>) -> PyResult<bool> {
        let Some(src) = &self.src else {
            return Ok(false);
        };
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        // Straight into `buf`: the bytes are copied once on their way from the I/O thread.
        let buf = &mut self.buf;
        let got = if src.input_would_wait() {
            py.detach(|| src.read_input(READ_STEP, buf))
        } else {
            src.read_input(READ_STEP, buf)
        };
        match got {
            Ok(0) => {
                self.src = None;
                Ok(false)
            }
            Ok(_) => Ok(true),
            Err(Gone) => {
                self.src = None;
                Err(PyOSError::new_err(
                    "the client disconnected before the request body was complete",
                ))
            }
        }
    }

    /// The next `n` bytes (fewer at the end of what `buf` holds), as a range of `buf`: the
    /// caller makes its `bytes` object straight from them.
    fn take(&mut self, n: usize) -> std::ops::Range<usize> {
        let end = self.pos.saturating_add(n).min(self.buf.len());
        let r = self.pos..end;
        self.pos = end;
        r
    }

    /// Up to `n` bytes (all that is left with None): fewer only at the end of the body.
    fn read_n(&mut self, py: Python<'_>, n: Option<usize>) -> PyResult<std::ops::Range<usize>> {
        let want = n.unwrap_or(usize::MAX);
        while self.avail() < want {
            if !self.fill(py)? {
                break;
            }
        }
        Ok(self.take(want))
    }

    /// One line (with its `\n`), at most `limit` bytes.
    fn line(&mut self, py: Python<'_>, limit: Option<usize>) -> PyResult<std::ops::Range<usize>> {
        let limit = limit.unwrap_or(usize::MAX);
        let mut scanned = 0;
        loop {
            let rest = &self.buf[self.pos + scanned..];
            if let Some(i) = rest.iter().position(|&c| c == b'\n') {
                return Ok(self.take((scanned + i + 1).min(limit)));
            }
            scanned = self.avail();
            if scanned >= limit || !self.fill(py)? {
                return Ok(self.take(limit));
            }
        }
    }
}

fn size_arg(size: Option<&Bound<'_, PyAny>>) -> PyResult<Option<usize>> {
    match size {
        None => Ok(None),
        Some(s) if s.is_none() => Ok(None),
        Some(s) => {
            let n: i64 = s.extract()?;
            Ok((n >= 0).then_some(n as usize))
        }
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let n = size_arg(size)?;
        let r = self.read_n(py, n)?;
        Ok(PyBytes::new(py, &self.buf[r]))
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let limit = size_arg(size)?;
        let r = self.line(py, limit)?;
        Ok(PyBytes::new(py, &self.buf[r]))
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint)?.filter(|&h| h > 0);
        let out = PyList::empty(py);
        let mut total = 0;
        loop {
            let l = self.line(py, None)?;
            if l.is_empty() {
                break;
            }
            total += l.len();
            out.append(PyBytes::new(py, &self.buf[l]))?;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(out)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let l = self.line(py, None)?;
        Ok((!l.is_empty()).then(|| PyBytes::new(py, &self.buf[l])))
    }
}

/// `wsgi.file_wrapper(filelike, block_size=8192)`: iterates the file in blocks; a real file
/// (one with `fileno()`) is read by Rust with the GIL released.
#[pyclass(module = "ringd_wsgi")]
pub struct FileWrapper {
    filelike: Py<PyAny>,
    block: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, block_size=8192))]
    fn new(filelike: Py<PyAny>, block_size: usize) -> FileWrapper {
        FileWrapper {
            filelike,
            block: block_size.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self.filelike.bind(py).call_method1("read", (self.block,))?;
        Ok((data.len()? > 0).then_some(data))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }
}

/// A real file's descriptor, if `w` wraps one.
fn wrapped_fd(w: &Bound<'_, FileWrapper>) -> Option<i32> {
    let f = w.borrow().filelike.clone_ref(w.py());
    let f = f.bind(w.py());
    let fd: i32 = f.call_method0("fileno").ok()?.extract().ok()?;
    // Where the app left the file: the body starts there.
    Some(fd)
}

/// Runs one call.
fn handle(py: Python<'_>, apps: &Apps, env: &Env, job: Job) {
    let Job { call, reply } = job;
    let method = call
        .environ
        .first()
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    let path = call
        .environ
        .iter()
        .find(|(k, _)| *k == "REQUEST_URI")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    let what = format!("{method} {path}");
    let Some(app) = apps.get(&*call.app) else {
        eprintln!("ringd-wsgi: {what}: no app {} in this worker", call.app);
        let _ = reply.send(Msg::Fail("no such app"));
        return;
    };
    let sr = match Py::new(
        py,
        StartResponse {
            resp: Resp {
                status: None,
                headers: Vec::new(),
                cl: None,
                head_sent: false,
                sent: 0,
                reply: reply.clone(),
                overrun: false,
                what: what.clone(),
            },
        },
    ) {
        Ok(s) => s,
        Err(e) => {
            e.print(py);
            let _ = reply.send(Msg::Fail("start_response"));
            return;
        }
    };
    let result = run(py, app, env, *call, &sr, &reply);
    if let Err(e) = result {
        if reply.gone() {
            return; // the client went away: nothing to answer, nothing to log
        }
        let _ = std::io::stderr()
            .write_all(format!("ringd-wsgi: {what}: the app raised:\n").as_bytes());
        e.print(py);
        let sent = sr.borrow(py).resp.head_sent;
        if sent {
            let _ = reply.send(Msg::Fail("the app raised after its response began"));
        } else {
            let body = b"500 Internal Server Error: the app failed (see the error log)\n";
            let mut r = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(body);
            let _ = reply.send(Msg::Data(r));
            let _ = reply.send(Msg::End);
        }
    }
}

/// Calls the app and relays its response; the result's `close()` is called whatever happens.
fn run(
    py: Python<'_>,
    app: &Py<PyAny>,
    env: &Env,
    mut call: ringd::gateway::wsgi::Call,
    sr: &Py<StartResponse>,
    reply: &Arc<Reply>,
) -> PyResult<()> {
    let environ = env.base.bind(py).copy()?;
    for (k, v) in &call.environ {
        if *k == "HTTPS" {
            environ.set_item("wsgi.url_scheme", "https")?;
        }
        environ.set_item(*k, latin1(py, v))?;
    }
    for (k, v) in &call.http {
        environ.set_item(k.as_str(), latin1(py, v))?;
    }
    let input = Py::new(
        py,
        Input {
            buf: std::mem::take(&mut call.body),
            pos: 0,
            src: call.streamed.then(|| reply.clone()),
        },
    )?;
    environ.set_item("wsgi.input", input)?;
    let result = app.bind(py).call1((environ, sr.clone_ref(py)))?;
    let relayed = relay(py, &result, sr, reply);
    let closed = if result.hasattr("close").unwrap_or(false) {
        result.call_method0("close").map(drop)
    } else {
        Ok(())
    };
    relayed?;
    closed
}

/// Iterates the app's result into the reply.
fn relay(
    py: Python<'_>,
    result: &Bound<'_, PyAny>,
    sr: &Py<StartResponse>,
    reply: &Arc<Reply>,
) -> PyResult<()> {
    // One chunk in a list (the common `return [body]`): its length is the Content-Length,
    // and head, body and end go out together.
    if let Ok(list) = result.cast::<PyList>() {
        if list.len() == 1 {
            let item = list.get_item(0)?;
            let b = item
                .cast::<PyBytes>()
                .map_err(|_| PyTypeError::new_err("the app's iterable must yield bytes"))?;
            let mut s = sr.borrow_mut(py);
            if s.resp.cl.is_none() && !s.resp.head_sent {
                let n = b.as_bytes().len();
                s.resp
                    .headers
                    .push(("Content-Length".into(), n.to_string()));
                s.resp.cl = Some(n as u64);
            }
            return s.resp.emit(py, b.as_bytes(), true);
        }
    }
    if let Ok(w) = result.cast::<FileWrapper>() {
        if let Some(fd) = wrapped_fd(w) {
            return send_file(py, fd, sr, reply);
        }
    }
    let it = result.try_iter()?;
    for item in it {
        let item = item?;
        let b = item
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("the app's iterable must yield bytes"))?;
        if b.as_bytes().is_empty() {
            continue;
        }
        sr.borrow_mut(py).resp.emit(py, b.as_bytes(), false)?;
        if reply.gone() {
            return Ok(());
        }
    }
    finish(py, sr)
}

/// The end of the body: the head if nothing went out yet (with `Content-Length: 0` when the
/// app set none), then the end.
fn finish(py: Python<'_>, sr: &Py<StartResponse>) -> PyResult<()> {
    let mut s = sr.borrow_mut(py);
    if !s.resp.head_sent && s.resp.cl.is_none() {
        let bodyless = s
            .resp
            .status
            .as_deref()
            .is_some_and(|st| st.starts_with("204") || st.starts_with("304"));
        if !bodyless {
            s.resp.headers.push(("Content-Length".into(), "0".into()));
            s.resp.cl = Some(0);
        }
    }
    s.resp.emit(py, b"", true)
}

/// A `wsgi.file_wrapper` around a real file: from its current offset to its end (or the
/// app's Content-Length), handed to the worker as a file piece that it sends with sendfile;
/// the bytes never pass through Python or this thread. Without a Content-Length from the
/// app, the file's size is one.
fn send_file(py: Python<'_>, fd: i32, sr: &Py<StartResponse>, reply: &Arc<Reply>) -> PyResult<()> {
    use std::os::fd::BorrowedFd;
    // SAFETY: `fd` belongs to the app's file object, open until the result's close(), which
    // runs after this returns; it is only borrowed to duplicate it.
    let dup = unsafe { BorrowedFd::borrow_raw(fd) }
        .try_clone_to_owned()
        .map_err(|e| PyOSError::new_err(e.to_string()))?;
    let file = std::fs::File::from(dup);
    let size = file
        .metadata()
        .map_err(|e| PyOSError::new_err(e.to_string()))?
        .len();
    // SAFETY: lseek on our own duplicate (it shares the offset with the app's descriptor).
    let off = unsafe { libc::lseek(std::os::fd::AsRawFd::as_raw_fd(&file), 0, libc::SEEK_CUR) };
    let off = u64::try_from(off).unwrap_or(0).min(size);
    let mut s = sr.borrow_mut(py);
    let mut len = size - off;
    if !s.resp.head_sent && s.resp.cl.is_none() {
        s.resp
            .headers
            .push(("Content-Length".into(), len.to_string()));
        s.resp.cl = Some(len);
    }
    if let Some(cl) = s.resp.cl {
        len = len.min(cl.saturating_sub(s.resp.sent));
    }
    // The head (if not out yet), then the file, then the end.
    s.resp.emit(py, b"", false)?;
    s.resp.sent += len;
    let fd = Arc::new(std::os::fd::OwnedFd::from(file));
    let send = || -> Result<(), Gone> {
        reply.send(Msg::File(fd, off, len))?;
        reply.send(Msg::End)
    };
    send().map_err(|Gone| PyOSError::new_err("the client disconnected"))
}
