//! The few file-system calls the handler makes: openat2 confined beneath the root, fstat, and
//! reading a small file whole. Thin safe wrappers; each unsafe block says why it holds.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// What the handler needs to know about an open file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// Modification time, whole seconds since the epoch (what Last-Modified can carry).
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub kind: Kind,
}

/// File type, as far as serving goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// FIFO, socket, device: never served.
    Other,
}

/// Opens `path` (relative) beneath `dir` for reading with openat2: RESOLVE_BENEATH and
/// RESOLVE_NO_MAGICLINKS always, RESOLVE_NO_SYMLINKS unless `follow_symlinks`. O_NONBLOCK
/// keeps a FIFO planted under the root from blocking the worker.
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    path: &CStr,
    follow_symlinks: bool,
) -> io::Result<OwnedFd> {
    let mut resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    if !follow_symlinks {
        resolve |= libc::RESOLVE_NO_SYMLINKS;
    }
    // SAFETY: open_how is a plain C struct for which all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY) as u64;
    how.resolve = resolve;
    // SAFETY: `path` is a valid NUL-terminated string and `how` a valid open_how that both
    // outlive this synchronous call; the size passed is the size of that struct. The kernel
    // returns a new fd that nothing else owns, or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-negative return is a freshly opened fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// fstat of an open fd.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Meta> {
    // SAFETY: libc::stat is plain data; all-zero is valid and fstat overwrites it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open descriptor for the duration of the call and `st` a valid,
    // writable stat buffer on our stack.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR => Kind::Dir,
        _ => Kind::Other,
    };
    Ok(Meta {
        dev: st.st_dev,
        ino: st.st_ino,
        size: st.st_size.max(0) as u64,
        mtime: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec,
        kind,
    })
}

/// Reads exactly `len` bytes from the start of `fd` (a regular file). A file that shrank
/// meanwhile gives an `UnexpectedEof` error (the caller re-stats it next time).
pub fn read_all(fd: BorrowedFd<'_>, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        // SAFETY: the destination range buf[done..len] is inside `buf`, which lives across
        // this synchronous call; `fd` is open.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf[done..].as_mut_ptr().cast(),
                len - done,
                done as libc::off_t,
            )
        };
        match n {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => done += n as usize,
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn open_stat_read() {
        let dir = crate::handler::testdir::TempDir::new("fs");
        dir.write("a.txt", b"hello");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let root = dir.root_fd();
        let f = open_beneath(root.as_fd(), c"a.txt", false).unwrap();
        let m = fstat(f.as_fd()).unwrap();
        assert_eq!((m.kind, m.size), (Kind::File, 5));
        assert_eq!(read_all(f.as_fd(), 5).unwrap(), b"hello");
        assert!(read_all(f.as_fd(), 6).is_err());
        let d = open_beneath(root.as_fd(), c"sub", false).unwrap();
        assert_eq!(fstat(d.as_fd()).unwrap().kind, Kind::Dir);
        let e = open_beneath(root.as_fd(), c"../etc/passwd", true).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EXDEV));
        let e = open_beneath(root.as_fd(), c"/etc/passwd", true).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EXDEV));
    }

    #[test]
    fn symlinks_confined() {
        let dir = crate::handler::testdir::TempDir::new("fs-link");
        dir.write("real.txt", b"x");
        std::os::unix::fs::symlink("real.txt", dir.path().join("inside")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("outside")).unwrap();
        let root = dir.root_fd();
        assert_eq!(
            open_beneath(root.as_fd(), c"inside", false)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ELOOP)
        );
        assert!(open_beneath(root.as_fd(), c"inside", true).is_ok());
        assert!(open_beneath(root.as_fd(), c"outside", true).is_err());
        assert!(open_beneath(root.as_fd(), c"outside", false).is_err());
    }
}
