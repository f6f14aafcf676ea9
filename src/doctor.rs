//! `ringd doctor`: what the kernel offers and what limits the server, with advice.

use std::io::{self, Write};

use crate::config::{Backend, Config};
use crate::driver::{self, uring::ring};
use crate::sys;

/// Backlog ringd asks for (the kernel caps it at net.core.somaxconn).
const WANT_SOMAXCONN: u64 = crate::worker::LISTEN_BACKLOG as u64;
/// Open files worth having: one per connection plus cached files.
const WANT_NOFILE: u64 = 65536;

/// One checked item: name, value shown, and advice when the value is too low.
struct Line {
    name: String,
    value: String,
    advice: Option<String>,
}

fn line(name: impl Into<String>, value: impl Into<String>, advice: Option<String>) -> Line {
    Line {
        name: name.into(),
        value: value.into(),
        advice,
    }
}

fn print_section(out: &mut dyn Write, title: &str, lines: &[Line]) -> io::Result<()> {
    writeln!(out, "{title}")?;
    let width = lines.iter().map(|l| l.name.len()).max().unwrap_or(0);
    for l in lines {
        let mark = if l.advice.is_some() { "!!  " } else { "ok  " };
        writeln!(out, "  {mark}{:width$}  {}", l.name, l.value)?;
        if let Some(a) = &l.advice {
            writeln!(out, "        advice: {a}")?;
        }
    }
    writeln!(out)
}

fn fmt_limit(v: u64) -> String {
    if v == u64::MAX || v == libc::RLIM_INFINITY {
        "unlimited".to_string()
    } else {
        v.to_string()
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// io_uring: sysctl, setup, flags, buffer rings and opcodes. Returns whether setup works.
fn uring_section(out: &mut dyn Write) -> io::Result<bool> {
    let mut lines = Vec::new();
    match sys::read_sysctl("kernel.io_uring_disabled") {
        Ok(v) => {
            let advice = (v != "0").then(|| {
                "io_uring is restricted (1: only the io_uring_group; 2: off for everyone); \
                 run `sysctl -w kernel.io_uring_disabled=0`, or use --backend epoll"
                    .to_string()
            });
            lines.push(line("kernel.io_uring_disabled", v, advice));
        }
        Err(_) => lines.push(line(
            "kernel.io_uring_disabled",
            "absent (kernel before 6.6: io_uring is not switchable)",
            None,
        )),
    }
    let built = ring::build(8, 16, false);
    let works = built.is_ok();
    match &built {
        Ok((_, flags)) => {
            lines.push(line("io_uring_setup", "works", None));
            let want = flags.single_issuer && flags.defer_taskrun;
            lines.push(line(
                "setup flags",
                ring::describe(*flags),
                (!want).then(|| {
                    "SINGLE_ISSUER + DEFER_TASKRUN need Linux 6.1+; ringd runs without them, \
                     a little slower"
                        .to_string()
                }),
            ));
        }
        Err(e) => lines.push(line(
            "io_uring_setup",
            format!("fails: {e}"),
            Some(
                "set kernel.io_uring_disabled=0 (and check seccomp/container policy), \
                 or use --backend epoll"
                    .to_string(),
            ),
        )),
    }
    if let Ok((r, _)) = &built {
        match ring::BufRing::new(r, 0, 2, 64) {
            Ok(br) => {
                br.unregister(r);
                lines.push(line("provided-buffer ring", "works", None));
            }
            Err(e) => lines.push(line(
                "provided-buffer ring",
                format!("fails: {e}"),
                Some("multishot recv needs buffer rings (Linux 5.19+); use --backend epoll".into()),
            )),
        }
        match ring::cap_iowq(r) {
            Ok(()) => lines.push(line("io-wq worker cap", "works", None)),
            Err(e) => lines.push(line(
                "io-wq worker cap",
                format!("unsupported: {e}"),
                Some("io-wq workers (cold file pages) cannot be capped (Linux 5.15+ can)".into()),
            )),
        }
    }
    // Probed on /proc/self/exe, a file every process has open-able.
    let probe = std::fs::File::open("/proc/self/exe")
        .and_then(|f| sys::cached(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 1));
    match probe {
        Ok(_) => lines.push(line("cachestat", "works", None)),
        Err(e) => lines.push(line(
            "cachestat",
            format!("unsupported: {e}"),
            Some(
                "without cachestat (Linux 6.5+) every file chunk is spliced in an io-wq \
                 thread, which costs more CPU than a splice in the worker"
                    .into(),
            ),
        )),
    }
    print_section(out, "io_uring", &lines)?;

    if let Ok((r, _)) = &built {
        let mut ops = Vec::new();
        match ring::probe(r) {
            Ok(have) => {
                for ((name, _, required), ok) in ring::OPCODES.iter().zip(have) {
                    let advice = (!ok).then(|| {
                        if *required {
                            "required by the uring backend: use --backend epoll".to_string()
                        } else {
                            "optional: ringd works around it".to_string()
                        }
                    });
                    ops.push(line(*name, if ok { "present" } else { "missing" }, advice));
                }
            }
            Err(e) => ops.push(line("probe", format!("fails: {e}"), None)),
        }
        print_section(out, "io_uring opcodes used by the uring backend", &ops)?;
    }
    Ok(works)
}

fn backends_section(out: &mut dyn Write) -> io::Result<()> {
    let mut lines = Vec::new();
    for b in Backend::ALL {
        let (value, advice) = match driver::check_available(b) {
            Ok(()) => ("can run".to_string(), None),
            Err(e) => ("cannot run".to_string(), Some(e.to_string())),
        };
        let value = match b {
            Backend::TokioUring if cfg!(feature = "tokio-uring") => {
                format!("{value} (cargo feature compiled in)")
            }
            Backend::TokioUring => format!("{value} (cargo feature not compiled in)"),
            _ => value,
        };
        lines.push(line(b.name(), value, advice));
    }
    let auto = match driver::check_available(Backend::Uring) {
        Ok(()) => "picks uring".to_string(),
        Err(e) => format!("picks epoll, because {e}"),
    };
    lines.push(line("auto (default)", auto, None));
    print_section(out, "backends (--backend)", &lines)
}

fn limits_section(out: &mut dyn Write) -> io::Result<()> {
    let config = Config::default();
    let workers = sys::allowed_cpus().len().max(1) as u64;
    let mut lines = Vec::new();

    match sys::getrlimit(libc::RLIMIT_NOFILE) {
        Ok(rl) => {
            let advice = (rl.hard < WANT_NOFILE).then(|| {
                format!(
                    "each connection takes a file descriptor and ringd raises the soft limit \
                     to the hard one; raise the hard limit to at least {WANT_NOFILE} \
                     (`ulimit -Hn`, LimitNOFILE= in systemd)"
                )
            });
            lines.push(line(
                "RLIMIT_NOFILE",
                format!("soft {} hard {}", fmt_limit(rl.soft), fmt_limit(rl.hard)),
                advice,
            ));
        }
        Err(e) => lines.push(line("RLIMIT_NOFILE", format!("unreadable: {e}"), None)),
    }
    match sys::getrlimit(libc::RLIMIT_MEMLOCK) {
        Ok(rl) => lines.push(line(
            "RLIMIT_MEMLOCK",
            format!(
                "soft {} hard {} (io_uring memory is charged to the cgroup since Linux 5.12)",
                fmt_limit(rl.soft),
                fmt_limit(rl.hard)
            ),
            None,
        )),
        Err(e) => lines.push(line("RLIMIT_MEMLOCK", format!("unreadable: {e}"), None)),
    }
    let num = |name: &str| {
        sys::read_sysctl(name)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
    };
    match num("net.core.somaxconn") {
        Some(v) => lines.push(line(
            "net.core.somaxconn",
            v.to_string(),
            (v < WANT_SOMAXCONN).then(|| {
                format!(
                    "accept backlogs are capped at {v}; bursts of new connections get dropped: \
                     `sysctl -w net.core.somaxconn={WANT_SOMAXCONN}`"
                )
            }),
        )),
        None => lines.push(line("net.core.somaxconn", "unreadable", None)),
    }
    let pipe_size = config.pipe_size as u64;
    match num("fs.pipe-max-size") {
        Some(v) => lines.push(line(
            "fs.pipe-max-size",
            v.to_string(),
            (v < pipe_size).then(|| {
                format!(
                    "splice pipes of {pipe_size} bytes (--pipe-size) are refused without \
                     CAP_SYS_RESOURCE: `sysctl -w fs.pipe-max-size={}`",
                    pipe_size.max(1 << 20)
                )
            }),
        )),
        None => lines.push(line("fs.pipe-max-size", "unreadable", None)),
    }
    let pages_needed = workers * config.pipe_pool as u64 * pipe_size.div_ceil(4096);
    match num("fs.pipe-user-pages-soft") {
        Some(v) => lines.push(line(
            "fs.pipe-user-pages-soft",
            format!("{v} pages (ringd's pipe pools want up to {pages_needed} with defaults)"),
            (v != 0 && v < pages_needed).then(|| {
                format!(
                    "past it, an unprivileged user's new pipes shrink to one page; \
                     `sysctl -w fs.pipe-user-pages-soft={}` or lower --pipe-pool/--pipe-size",
                    pages_needed * 2
                )
            }),
        )),
        None => lines.push(line("fs.pipe-user-pages-soft", "unreadable", None)),
    }
    print_section(out, "limits", &lines)
}

/// Print the whole report.
pub fn run(out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "ringd {} doctor: Linux {}, {} CPU(s) available to this process\n",
        env!("CARGO_PKG_VERSION"),
        kernel_release(),
        sys::allowed_cpus().len()
    )?;
    uring_section(out)?;
    backends_section(out)?;
    limits_section(out)?;
    ktls_section(out)?;
    Ok(())
}

/// Kernel TLS: whether the `tls` ULP is there (probed, never assumed).
fn ktls_section(out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "\nHTTPS")?;
    match crate::tls::ktls::probe() {
        crate::tls::ktls::Ktls::Available => writeln!(
            out,
            "  kernel TLS (tls ULP): available; TLS listeners hand records to the kernel after \
             the handshake (ktls), unless --no-ktls"
        ),
        crate::tls::ktls::Ktls::Absent(why) => writeln!(
            out,
            "  kernel TLS (tls ULP): absent ({why}); TLS records are made in user space (rustls)"
        ),
    }
}

/// The listener of `config` and the mode it runs in: plain HTTP, or HTTPS (with which
/// certificates, and how records are made: kernel TLS (ktls) after the handshake, or
/// userspace records).
pub fn listener_report(out: &mut dyn Write, config: &crate::config::Config) -> io::Result<()> {
    match &config.tls {
        None => writeln!(out, "  listener {}: plain HTTP", config.listen),
        Some(t) => writeln!(
            out,
            "  listener {}: {}; TLS 1.3 and 1.2, ALPN http/1.1, {}",
            config.listen,
            t.describe(),
            t.record_mode()
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn report_names_every_check() {
        let mut buf = Vec::new();
        super::run(&mut buf).unwrap();
        let s = String::from_utf8(buf).unwrap();
        for want in [
            "kernel.io_uring_disabled",
            "io_uring_setup",
            "setup flags",
            "cachestat",
            "Splice",
            "AsyncCancel",
            "uring",
            "epoll",
            "tokio-uring",
            "RLIMIT_NOFILE",
            "kernel TLS (tls ULP)",
            "RLIMIT_MEMLOCK",
            "net.core.somaxconn",
            "fs.pipe-max-size",
            "fs.pipe-user-pages-soft",
        ] {
            assert!(s.contains(want), "doctor output lacks {want}:\n{s}");
        }
    }
}
