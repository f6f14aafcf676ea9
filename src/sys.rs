//! Thin, safe wrappers over the Linux calls the drivers and worker share (openat2, eventfd,
//! pipes, signals, rlimits).

use std::ffi::CString;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// Turn a libc return value into an `io::Result`, reading errno on -1.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Open `path` as an `O_PATH | O_DIRECTORY | O_CLOEXEC` fd, the handle every worker resolves
/// request paths beneath.
pub fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let fd = cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `open` just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A non-blocking, close-on-exec eventfd starting at 0.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall without pointers.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: `eventfd` just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Add `value` to an eventfd's counter (makes it readable).
pub fn eventfd_write(fd: BorrowedFd<'_>, value: u64) -> io::Result<()> {
    let buf = value.to_ne_bytes();
    // SAFETY: `buf` is 8 valid bytes for the duration of the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n == 8 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Read and reset an eventfd's counter; `Ok(None)` when it is 0 (non-blocking eventfd).
pub fn eventfd_read(fd: BorrowedFd<'_>) -> io::Result<Option<u64>> {
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is 8 writable bytes for the duration of the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n == 8 {
        return Ok(Some(u64::from_ne_bytes(buf)));
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::WouldBlock {
        Ok(None)
    } else {
        Err(err)
    }
}

/// A pipe (read end, write end), both non-blocking and close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 just returned these fds and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// splice(2) of up to `len` bytes from `from` to `to` (one of them a pipe, both streams),
/// without blocking (SPLICE_F_NONBLOCK; the sockets are non-blocking too).
pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice touches no user memory; the offsets are null (both ends are streams) and
    // the caller keeps both fds open for the duration of the call.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// splice(2) of up to `len` bytes of the file `fd` at `offset` into the pipe `to` (which must
/// not block: SPLICE_F_NONBLOCK). The file side is an ordinary read: it waits for the disk
/// when the pages are not cached, so ask [`cached`] first where that matters.
pub fn splice_file(fd: RawFd, offset: u64, to: RawFd, len: usize) -> io::Result<usize> {
    let mut off = libc::loff_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    // SAFETY: splice reads and advances only `off`, a local that outlives the call; the
    // caller keeps both fds open for its duration.
    let n = unsafe {
        libc::splice(
            fd,
            &mut off,
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// cachestat(2) (Linux 6.5; the number is the same on every architecture).
const SYS_CACHESTAT: libc::c_long = 451;

/// Whether every page of `len` bytes of the file `fd` from `offset` is in the page cache
/// (cachestat(2)), so reading them cannot wait for the disk. Errors with ENOSYS on kernels
/// before 6.5.
pub fn cached(fd: RawFd, offset: u64, len: u64) -> io::Result<bool> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    if len == 0 {
        return Ok(true);
    }
    let range = Range { off: offset, len };
    let mut st = Stat::default();
    // SAFETY: cachestat reads `range` and writes one `struct cachestat` into `st`, both
    // live locals laid out as the kernel's (five and two u64s, repr(C)); flags must be 0.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd,
            &range as *const Range,
            &mut st as *mut Stat,
            0u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let page = page_size();
    let pages = (offset + len).div_ceil(page) - offset / page;
    Ok(st.nr_cache >= pages)
}

/// The system's page size.
pub fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no memory effects.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if n > 0 {
            n as u64
        } else {
            4096
        }
    })
}

/// Ask for a pipe capacity of `size` bytes (F_SETPIPE_SZ); returns the capacity it has after.
pub fn set_pipe_size(fd: BorrowedFd<'_>, size: usize) -> io::Result<usize> {
    let size = libc::c_int::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pipe size too large"))?;
    // SAFETY: fcntl with an integer argument.
    let got = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size) })?;
    Ok(got as usize)
}

/// A pipe's capacity in bytes (F_GETPIPE_SZ).
pub fn pipe_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: fcntl without pointer arguments.
    let got = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) })?;
    Ok(got as usize)
}

/// Bytes waiting to be read in a pipe or a TCP socket (FIONREAD, which is SIOCINQ on a socket).
pub fn fionread(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int into `n`, valid for the call.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) })?;
    Ok(n as usize)
}

/// TCP_DEFER_ACCEPT on a listening socket: accept only once data arrived, or after about
/// `wait` (rounded up to whole seconds) without any. socket2 has no setter for it.
pub fn set_defer_accept(sock: impl AsFd, wait: Duration) -> io::Result<()> {
    let secs = libc::c_int::try_from(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        .unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads one c_int from `secs`, which outlives the call.
    cvt(unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// TCP_DEFER_ACCEPT of a listening socket as the kernel reports it (seconds).
pub fn defer_accept(sock: impl AsFd) -> io::Result<u32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v` and the length into `len`, both
    // valid for the call.
    cvt(unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(v as u32)
}

/// The signals that request graceful shutdown.
pub const SHUTDOWN_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn shutdown_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SHUTDOWN_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Block SIGINT and SIGTERM in the calling thread. Threads spawned afterwards inherit the
/// mask, so the signals stay pending until `wait_shutdown_signal` takes them.
pub fn block_shutdown_signals() -> io::Result<()> {
    let set = shutdown_sigset();
    // SAFETY: `set` is an initialised sigset; the old mask is not requested.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Wait up to `timeout` for SIGINT or SIGTERM (which must be blocked); the signal number, or
/// None when the time ran out.
pub fn wait_shutdown_signal(timeout: Duration) -> io::Result<Option<libc::c_int>> {
    let set = shutdown_sigset();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` and `ts` are valid for the call; no siginfo is requested.
    let rc = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    if rc >= 0 {
        return Ok(Some(rc));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
        _ => Err(err),
    }
}

/// A resource limit, soft and hard (`u64::MAX` = unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rlimit {
    pub soft: u64,
    pub hard: u64,
}

/// Read a resource limit (e.g. `libc::RLIMIT_NOFILE`).
pub fn getrlimit(resource: libc::__rlimit_resource_t) -> io::Result<Rlimit> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit.
    cvt(unsafe { libc::getrlimit(resource, &mut rl) })?;
    Ok(Rlimit {
        soft: rl.rlim_cur,
        hard: rl.rlim_max,
    })
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the limit now in force.
pub fn raise_nofile_limit() -> io::Result<Rlimit> {
    let mut rl = getrlimit(libc::RLIMIT_NOFILE)?;
    if rl.soft < rl.hard {
        let new = libc::rlimit {
            rlim_cur: rl.hard,
            rlim_max: rl.hard,
        };
        // SAFETY: `new` is a valid rlimit read for the call.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) })?;
        rl.soft = rl.hard;
    }
    Ok(rl)
}

/// A sysctl value from /proc/sys (`name` with dots, e.g. `net.core.somaxconn`), trimmed.
pub fn read_sysctl(name: &str) -> io::Result<String> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

/// The CPUs this process may run on (sched_getaffinity), in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_default()
}

/// The CPU set the calling thread may run on (sched_getaffinity).
pub fn thread_affinity() -> io::Result<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data, fully written by sched_getaffinity on success.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid for size_of::<cpu_set_t>() bytes; pid 0 = the calling thread.
    cvt(unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) })?;
    Ok(set)
}

/// The peer address of a connected socket (getpeername).
pub fn peer_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    let peer = socket2::SockRef::from(&fd).peer_addr()?;
    peer.as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "peer is not an IP socket"))
}

/// Whether bytes are waiting unread in a socket's receive queue (a non-blocking one-byte
/// peek). Closing a socket with unread input makes the kernel send RST instead of FIN.
pub fn has_unread_input(fd: BorrowedFd<'_>) -> bool {
    let mut byte = 0u8;
    // SAFETY: recv writes at most one byte into `byte`, a local that outlives the call; `fd`
    // is borrowed, so it stays open for the call.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n > 0
}

/// Shut the write side of a socket (the peer sees EOF after what was sent).
pub fn shutdown_write(fd: impl AsFd) -> io::Result<()> {
    socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Write)
}

/// Shut both directions of a socket: pending reads see EOF, pending writes fail.
pub fn shutdown_both(fd: impl AsFd) -> io::Result<()> {
    socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_roundtrip() {
        let fd = eventfd().unwrap();
        assert_eq!(eventfd_read(fd.as_fd()).unwrap(), None);
        eventfd_write(fd.as_fd(), 2).unwrap();
        eventfd_write(fd.as_fd(), 3).unwrap();
        assert_eq!(eventfd_read(fd.as_fd()).unwrap(), Some(5));
        assert_eq!(eventfd_read(fd.as_fd()).unwrap(), None);
    }

    #[test]
    fn pipe_size_can_be_set_or_reports_failure() {
        let (r, _w) = pipe().unwrap();
        let before = pipe_size(r.as_fd()).unwrap();
        assert!(before >= 4096);
        if let Ok(got) = set_pipe_size(r.as_fd(), 128 * 1024) {
            assert!(got >= 128 * 1024);
            assert_eq!(pipe_size(r.as_fd()).unwrap(), got);
        }
    }

    #[test]
    fn open_dir_path_rejects_files_and_missing() {
        let dir = std::env::temp_dir();
        assert!(open_dir_path(&dir).is_ok());
        assert!(open_dir_path(Path::new("/nonexistent/ringd-test")).is_err());
        assert!(open_dir_path(Path::new("/proc/self/status")).is_err());
    }

    #[test]
    fn cached_tells_evicted_pages_from_read_ones_and_splice_file_moves_them() {
        use std::io::{Read, Write};
        let path = std::env::temp_dir().join(format!("ringd-cachestat-{}", std::process::id()));
        let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let mut f = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let fd = f.as_raw_fd();
        // SAFETY: fadvise on an open fd has no memory effects.
        unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
        // SAFETY: statfs is plain integers, for which all-zero bytes are a valid value.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: fstatfs writes one statfs into `st`, a live local; `fd` is open.
        let tmpfs = unsafe { libc::fstatfs(fd, &mut st) } == 0 && st.f_type == libc::TMPFS_MAGIC;
        match cached(fd, 4096, 64 * 1024) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => return, // kernel before 6.5
            // Clean pages of an unmapped file are dropped by DONTNEED (tmpfs keeps them).
            r => assert!(tmpfs || !r.unwrap(), "evicted pages reported cached"),
        }
        f.read_to_end(&mut Vec::new()).unwrap();
        assert!(cached(fd, 4096, 64 * 1024).unwrap());
        assert!(cached(fd, 100, 1).unwrap());
        assert!(cached(fd, 0, 0).unwrap());
        let (r, w) = pipe().unwrap();
        let n = splice_file(fd, 1000, w.as_raw_fd(), 5000).unwrap();
        assert!(n > 0 && n <= 5000);
        let mut got = vec![0; n];
        // SAFETY: reads at most `n` bytes into `got`, which holds `n`.
        let k = unsafe { libc::read(r.as_raw_fd(), got.as_mut_ptr().cast(), n) };
        assert_eq!(k, n as isize);
        assert_eq!(&got[..], &data[1000..1000 + n]);
    }
}
