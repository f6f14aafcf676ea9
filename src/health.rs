//! Active health checks: one management thread per server process (off the request path)
//! GETs each upstream group's `health.path` from every server every `health.interval` and
//! sets that server's shared flag; the workers' balancers skip a server whose flag is down.
//! Each change of state is logged once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::upstreams::{Addr, Upstream};

/// Longest a single check may take (connect, send, read the status line).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The running checker; stops (and joins) on drop.
pub struct Checker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts checking every group of `groups` that has `health` set; None when none has.
pub fn start(groups: &[Upstream]) -> Option<Checker> {
    let groups: Vec<Upstream> = groups
        .iter()
        .filter(|u| u.health.is_some())
        .cloned()
        .collect();
    if groups.is_empty() {
        return None;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("ringd-health".into())
        .spawn(move || run(&groups, &flag))
        .ok()?;
    Some(Checker {
        stop,
        thread: Some(thread),
    })
}

fn run(groups: &[Upstream], stop: &AtomicBool) {
    let mut next: Vec<Instant> = vec![Instant::now(); groups.len()];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for (g, due) in groups.iter().zip(next.iter_mut()) {
            if now < *due {
                continue;
            }
            let Some(h) = &g.health else { continue };
            for (i, s) in g.servers.iter().enumerate() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let result = check(&s.addr, &h.path, h.interval.min(CHECK_TIMEOUT));
                let healthy = result.as_ref().is_ok_and(|st| *st == h.expect);
                let Some(flag) = h.up.get(i) else { continue };
                if flag.swap(healthy, Ordering::Relaxed) != healthy {
                    let why = match &result {
                        Ok(st) => format!("status {st}"),
                        Err(e) => e.to_string(),
                    };
                    let msg = format!(
                        "ringd: upstream {}: {} is {} ({} {} → {why})\n",
                        g.name,
                        s.addr,
                        if healthy { "up" } else { "down" },
                        "GET",
                        h.path
                    );
                    let _ = std::io::stderr().write_all(msg.as_bytes());
                }
            }
            *due = now + h.interval;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One check: the status code `addr` answers to `GET path`.
fn check(addr: &Addr, path: &str, timeout: Duration) -> std::io::Result<u16> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringd-health\r\nConnection: close\r\n\r\n",
        match addr {
            Addr::Tcp(a) => a.to_string(),
            Addr::Unix(_) => "localhost".to_string(),
        }
    );
    let mut buf = [0u8; 512];
    let n = match addr {
        Addr::Tcp(a) => {
            let mut s = TcpStream::connect_timeout(a, timeout)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            s.write_all(req.as_bytes())?;
            read_status_line(&mut s, &mut buf)?
        }
        Addr::Unix(p) => {
            let mut s = UnixStream::connect(p)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            s.write_all(req.as_bytes())?;
            read_status_line(&mut s, &mut buf)?
        }
    };
    let line = std::str::from_utf8(&buf[..n]).unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(v), Some(code)) = (parts.next(), parts.next()) else {
        return Err(std::io::Error::other("no status line"));
    };
    if !v.starts_with("HTTP/1.") {
        return Err(std::io::Error::other("not an HTTP/1.x response"));
    }
    code.trim()
        .parse()
        .map_err(|_| std::io::Error::other("a malformed status code"))
}

/// Reads until the first CRLF (or the buffer fills); returns the line's length.
fn read_status_line(s: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = s.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
        if let Some(i) = buf[..n].windows(2).position(|w| w == b"\r\n") {
            return Ok(i);
        }
    }
    Ok(n)
}
