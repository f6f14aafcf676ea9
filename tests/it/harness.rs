//! Test harness: start the real `ringd` binary per backend, temp roots, skips, process control.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the server may take to print its URL.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Words in a start-up failure that mean "this backend cannot run here" (a skip, not a failure).
const UNAVAILABLE_WORDS: [&str; 6] = [
    "not available",
    "unavailable",
    "not supported",
    "disabled",
    "not compiled",
    "was built without",
];

/// Panic payload that marks a backend as unable to run on this machine.
pub struct Skip(pub String);

/// A listener on 127.0.0.1 whose accepted sockets have a `rcvbuf`-byte receive buffer (set
/// before listen, so TCP's window stays that small): a test upstream that ringd must fill.
pub fn small_rcvbuf_listener(rcvbuf: usize) -> std::net::TcpListener {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(rcvbuf).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    sock.bind(&any.into()).unwrap();
    sock.listen(64).unwrap();
    sock.into()
}

/// Run one test case against one backend: honours `RINGD_TEST_BACKENDS`, turns a `Skip`
/// panic into a visible `SKIP backend=X: reason` line (written past the test harness's output
/// capture, so it always shows), and lets real failures through.
pub fn run_case(backend: &str, case: fn(&str)) {
    if let Ok(list) = std::env::var("RINGD_TEST_BACKENDS") {
        let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
        if !wanted.contains(&backend) {
            skip_line(&format!("backend={backend}"), "not in RINGD_TEST_BACKENDS");
            return;
        }
    }
    catch_skip(&format!("backend={backend}"), || case(backend));
}

/// Run `f`, turning a `Skip` panic into a visible `SKIP <label>: reason` line; real failures
/// go through.
pub fn catch_skip(label: &str, f: impl FnOnce()) {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(()) => {}
        Err(payload) => match payload.downcast::<Skip>() {
            Ok(skip) => skip_line(label, &skip.0),
            Err(other) => std::panic::resume_unwind(other),
        },
    }
}

fn skip_line(label: &str, reason: &str) {
    let name = thread::current().name().unwrap_or("?").to_string();
    // Straight to fd 2: `eprintln!` would be captured and hidden for a passing test.
    let _ = writeln!(std::io::stderr(), "SKIP {label}: {reason} (test {name})");
}

/// A temporary folder, removed on drop. `path()` is the folder itself.
pub struct TempDir {
    path: PathBuf,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "ringd-it-{tag}-{}-{seq}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `rel` (creating parent folders) with `data`, its mtime set to a fixed past time so
    /// that Last-Modified is a strong validator (RFC 9110 §8.8.2.2) from the first request.
    pub fn write(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.path.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent dir");
        }
        std::fs::write(&p, data).expect("write file");
        let f = std::fs::File::options()
            .write(true)
            .open(&p)
            .expect("reopen file");
        f.set_modified(fixed_mtime()).expect("set mtime");
        p
    }

    pub fn symlink(&self, target: impl AsRef<Path>, rel: &str) {
        std::os::unix::fs::symlink(target, self.path.join(rel)).expect("symlink");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The mtime every test file gets: 2021-03-04 05:06:07 UTC.
pub fn fixed_mtime() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_614_834_367)
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Starts a `ringd` process: `ServerBuilder::new(backend, root).arg("--x").start()`.
pub struct ServerBuilder {
    backend: String,
    root: PathBuf,
    /// Serve `--config FILE` instead of the root folder.
    config: Option<PathBuf>,
    args: Vec<String>,
    listen: String,
    workers: usize,
    /// Another program (ringd-wsgi) with its own whole argument list, run in `cwd`.
    program: Option<(PathBuf, Vec<String>, PathBuf)>,
}

impl ServerBuilder {
    pub fn new(backend: &str, root: &Path) -> ServerBuilder {
        ServerBuilder {
            backend: backend.to_string(),
            root: root.to_path_buf(),
            config: None,
            args: Vec::new(),
            listen: "127.0.0.1:0".to_string(),
            workers: 2,
            program: None,
        }
    }

    /// Run `program` with exactly `args` in folder `cwd` instead of ringd (it must print an
    /// `http://127.0.0.1:PORT/` line like ringd does).
    pub fn program(program: &Path, args: &[&str], cwd: &Path) -> ServerBuilder {
        let mut b = ServerBuilder::new("epoll", cwd);
        let args = args.iter().map(|s| s.to_string()).collect();
        b.program = Some((program.to_path_buf(), args, cwd.to_path_buf()));
        b
    }

    pub fn arg(mut self, a: &str) -> ServerBuilder {
        self.args.push(a.to_string());
        self
    }

    pub fn args(mut self, list: &[&str]) -> ServerBuilder {
        self.args.extend(list.iter().map(|s| s.to_string()));
        self
    }

    /// The full argument list the server is started with.
    pub fn command_line(&self) -> Vec<String> {
        let mut v = vec![
            "--listen".to_string(),
            self.listen.clone(),
            "--workers".to_string(),
            self.workers.to_string(),
            "--backend".to_string(),
            self.backend.clone(),
        ];
        v.extend(self.args.iter().cloned());
        match &self.config {
            Some(c) => {
                v.push("--config".into());
                v.push(c.display().to_string());
            }
            None => v.push(self.root.display().to_string()),
        }
        v
    }

    /// Listen on `addr` instead of `127.0.0.1:0` (a port another process must know first).
    pub fn listen(mut self, addr: &str) -> ServerBuilder {
        self.listen = addr.to_string();
        self
    }

    /// Run `n` workers instead of 2.
    pub fn workers(mut self, n: usize) -> ServerBuilder {
        self.workers = n;
        self
    }

    /// Serve the sites of config file `path` (`--config`) instead of a root folder.
    pub fn config(mut self, path: &Path) -> ServerBuilder {
        self.config = Some(path.to_path_buf());
        self
    }

    /// Start the server and wait for its URL. A backend that says it cannot run here raises a
    /// `Skip`; any other start-up failure fails the test with the server's stderr.
    pub fn start(self) -> Server {
        let (mut cmd, args) = match &self.program {
            Some((p, args, cwd)) => {
                let mut c = Command::new(p);
                c.current_dir(cwd);
                (c, args.clone())
            }
            None => (
                Command::new(env!("CARGO_BIN_EXE_ringd")),
                self.command_line(),
            ),
        };
        let mut child = cmd
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringd");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let out = child.stdout.take().expect("stdout pipe");
            let stdout = stdout.clone();
            thread::spawn(move || {
                let mut r = BufReader::new(out);
                let mut line = String::new();
                while let Ok(n) = r.read_line(&mut line) {
                    if n == 0 {
                        break;
                    }
                    stdout.lock().unwrap().extend_from_slice(line.as_bytes());
                    let _ = tx.send(line.clone());
                    line.clear();
                }
            });
        }
        {
            let mut err = child.stderr.take().expect("stderr pipe");
            let stderr = stderr.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    stderr.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        let mut server = Server {
            child: Some(child),
            port: 0,
            backend: self.backend.clone(),
            args,
            stderr,
            stdout,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(port) = parse_url_port(&line) {
                        server.port = port;
                        return server;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "ringd --backend {} printed no http://127.0.0.1:PORT/ line within {:?}\n{}",
                        server.backend,
                        START_TIMEOUT,
                        server.diagnostics()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process is exiting. Give stderr a moment to drain.
                    let status = server
                        .wait_exit(Duration::from_secs(5))
                        .map_or("still running".to_string(), |s| s.to_string());
                    thread::sleep(Duration::from_millis(50));
                    let err = server.stderr_text();
                    if let Some(why) = unavailable_reason(&err) {
                        std::panic::panic_any(Skip(format!(
                            "ringd exited at start ({status}): {why}"
                        )));
                    }
                    panic!(
                        "ringd --backend {} exited before printing its URL ({status})\n{}",
                        server.backend,
                        server.diagnostics()
                    );
                }
            }
        }
    }
}

/// The stderr line saying that a backend (or io_uring itself) cannot run on this machine or
/// build, if there is one: such a start-up failure is a skip, not a test failure.
pub fn unavailable_reason(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find(|line| {
            let l = line.to_ascii_lowercase();
            let about = ["backend", "io_uring", "io-uring", "tokio-uring"];
            about.iter().any(|w| l.contains(w)) && UNAVAILABLE_WORDS.iter().any(|w| l.contains(w))
        })
        .map(|l| l.trim().to_string())
}

/// Find `http://127.0.0.1:PORT/` (or `https://`) in a line.
fn parse_url_port(line: &str) -> Option<u16> {
    let i = line.find("://127.0.0.1:")?;
    let rest = &line[i + "://127.0.0.1:".len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if !rest[digits.len()..].starts_with('/') {
        return None;
    }
    digits.parse().ok().filter(|p| *p != 0)
}

/// A running server; killed (SIGTERM, then SIGKILL) and reaped on drop.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub backend: String,
    pub args: Vec<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stdout: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// A connected stream with 10 s read/write timeouts.
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr())
            .unwrap_or_else(|e| panic!("connect {}: {e}\n{}", self.addr(), self.diagnostics()));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// The server's stderr once it contains `needle`, or what it holds after 10 s. A line the
    /// server wrote before the event a test saw can still be in the pipe, on its way to the
    /// reader thread, so a test that looks for it waits here rather than reading once.
    pub fn wait_stderr(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let err = self.stderr_text();
            if err.contains(needle) || std::time::Instant::now() >= deadline {
                return err;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Command line, stdout and stderr so far, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "--- ringd {}", self.args.join(" "));
        let _ = writeln!(
            s,
            "--- stdout:\n{}",
            String::from_utf8_lossy(&self.stdout.lock().unwrap())
        );
        let _ = write!(s, "--- stderr:\n{}", self.stderr_text());
        s
    }

    /// Send a signal to the server process.
    pub fn signal(&self, sig: i32) {
        let pid = self.pid();
        if pid > 0 {
            // SAFETY: kill(2) with the PID of a child we spawned and have not reaped yet (the
            // Child is still held), so the PID cannot have been reused.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// Wait up to `limit` for the process to exit; None if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => return None,
            }
        }
    }

    /// SIGTERM, then wait up to `limit`. Returns the exit status and how long it took; panics
    /// (after a SIGKILL) when the server did not exit in time.
    pub fn terminate(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let t0 = Instant::now();
        self.signal(libc::SIGTERM);
        match self.wait_exit(limit) {
            Some(st) => (st, t0.elapsed()),
            None => {
                self.kill_hard();
                panic!(
                    "ringd did not exit within {limit:?} of SIGTERM\n{}",
                    self.diagnostics()
                );
            }
        }
    }

    fn kill_hard(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let running = matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)));
        if running {
            self.signal(libc::SIGTERM);
            if self.wait_exit(Duration::from_secs(3)).is_none() {
                self.kill_hard();
            }
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.wait();
        }
    }
}

/// Raise this process's RLIMIT_NOFILE soft limit to at least `want` (up to the hard limit).
/// Children started afterwards inherit it.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// Run a command (the ringd binary with `args`) to completion with a time limit; returns
/// (status, stdout, stderr).
pub fn run_ringd(args: &[&str], limit: Duration) -> (ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringd"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringd");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringd {} did not finish within {limit:?}", args.join(" "));
        }
        thread::sleep(Duration::from_millis(20));
    };
    let out = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
    let err = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
    (status, out, err)
}
