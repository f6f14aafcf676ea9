//! Open jobs: the uring driver opens files for the handler with io_uring, so that a cold disk
//! (an inode or directory not in memory, a small body not in the page cache) never stalls the
//! loop. When a request's path needs opening or revalidating, the handler parks the request
//! and names the path (`Files::take_wanted`); a job then
//!
//! 1. submits one `OpenAt2` per planned path (the file or its `index.html`, and its `.br`,
//!    `.zst` and `.gz` sidecars) beneath the root, with the flags of the synchronous
//!    `fs::open_beneath` (RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS unless
//!    `--follow-symlinks`);
//! 2. hands the results to `Files::opened` (an `fstat` of an open fd reads no disk), which
//!    either settles the path or asks for the bodies the cache keeps in memory;
//! 3. reads those with one `Read` each into buffers the job owns, then `Files::finish`.
//!
//! The requests that waited on the path are then resumed. A job owns every fd and buffer its
//! ops use until the last of its completions, and the driver waits for those at exit.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use io_uring::{opcode, types};

use super::token::{Op, Token};
use super::Driver;
use crate::handler::filecache::{Found, OpenPlan, Probe, ServeError};
use crate::handler::AfterOpen;

/// One path being opened (and its small bodies read).
pub(super) struct Job {
    key: Box<[u8]>,
    /// What to open. Its paths are what the OpenAt2 ops name: it is handed to the handler
    /// only once every one of them has completed.
    plan: Option<OpenPlan>,
    /// Read by the kernel at submission (boxed: its address must not move).
    how: Box<types::OpenHow>,
    opened: [Option<io::Result<OwnedFd>>; 4],
    /// After the opens, while bodies are read: the files found, which owns the read fds.
    probe: Option<Probe>,
    /// Buffers the Read ops write into, by representation (0 = the file, 1..=3 sidecars).
    bodies: [Option<Vec<u8>>; 4],
    /// Ops in flight.
    ops: u32,
}

/// Slab of jobs. A slot is reused only after its job's last completion, so a job's index
/// alone names it in tokens.
#[derive(Default)]
pub(super) struct Jobs {
    slots: Vec<Option<Job>>,
    free: Vec<u32>,
}

impl Jobs {
    fn insert(&mut self, job: Job) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(job);
                i
            }
            None => {
                self.slots.push(Some(job));
                (self.slots.len() - 1) as u32
            }
        }
    }

    fn get_mut(&mut self, i: u32) -> Option<&mut Job> {
        self.slots.get_mut(i as usize)?.as_mut()
    }

    fn remove(&mut self, i: u32) -> Option<Job> {
        let job = self.slots.get_mut(i as usize)?.take()?;
        self.free.push(i);
        Some(job)
    }
}

impl Driver {
    /// Start a job for every path the handler is waiting on.
    pub(super) fn start_open_jobs(&mut self) {
        while let Some(key) = self.svc.files().take_wanted() {
            let Some(plan) = self.svc.files().open_plan(&key) else {
                // Refused without opening anything: the outcome is in place.
                self.resume_open_waiters(&key);
                continue;
            };
            let mut resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
            if !self.config.follow_symlinks {
                resolve |= libc::RESOLVE_NO_SYMLINKS;
            }
            let how = Box::new(
                types::OpenHow::new()
                    .flags(
                        (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
                            as u64,
                    )
                    .resolve(resolve),
            );
            let root = self.svc.files().root_fd(&key);
            let job = self.jobs.insert(Job {
                key,
                plan: Some(plan),
                how,
                opened: [None, None, None, None],
                probe: None,
                bodies: [None, None, None, None],
                ops: 0,
            });
            let Some(j) = self.jobs.get_mut(job) else {
                continue;
            };
            let Some(plan) = j.plan.as_ref() else {
                continue;
            };
            for (which, path) in plan.paths.iter().enumerate() {
                let entry =
                    opcode::OpenAt2::new(types::Fd(root), path.as_ptr(), &*j.how as *const _)
                        .build();
                let tok = Token {
                    op: Op::Open,
                    conn: job,
                    conn_gen: which as u32,
                };
                // SAFETY: the path (a CString in the job's plan) and the open_how (boxed) do
                // not move and live until this op's completion: the plan leaves the job only
                // when all its opens have completed, the job is removed only after that. The
                // root fd is owned by the handler, which outlives the driver's ops.
                unsafe { self.sq.push(entry, tok) };
                j.ops += 1;
            }
        }
    }

    /// Completion of an OpenAt2 (`which` names the path) or a Read (`which` names the body).
    pub(super) fn on_job_op(&mut self, op: Op, job: u32, which: u32, res: i32) {
        let Some(j) = self.jobs.get_mut(job) else {
            return;
        };
        j.ops -= 1;
        let which = which as usize;
        match op {
            Op::Open => {
                j.opened[which] = Some(if res >= 0 {
                    // SAFETY: a non-negative OpenAt2 result is a new fd that nothing else owns.
                    Ok(unsafe { OwnedFd::from_raw_fd(res) })
                } else {
                    Err(io::Error::from_raw_os_error(-res))
                });
            }
            _ => {
                let want = j.bodies[which].as_ref().map_or(0, Vec::len);
                if res < 0 || res as usize != want {
                    // A failed or short read (the file changed size): leave this body to the
                    // handler, which reads it again synchronously and reports what it finds.
                    j.bodies[which] = None;
                }
            }
        }
        if j.ops > 0 || self.exiting {
            if j.ops == 0 {
                self.jobs.remove(job);
            }
            return;
        }
        if j.probe.is_none() {
            self.job_opened(job);
        } else {
            self.job_read(job);
        }
    }

    /// Every OpenAt2 of `job` completed.
    fn job_opened(&mut self, job: u32) {
        let Some(j) = self.jobs.get_mut(job) else {
            return;
        };
        let key = j.key.clone();
        let (Some(plan), [Some(a), Some(b), Some(c), Some(d)]) =
            (j.plan.take(), std::mem::take(&mut j.opened))
        else {
            // Every open completed, so this cannot happen; never leave the path's requests
            // parked for good if it does.
            self.jobs.remove(job);
            let err = ServeError::Io(io::Error::other("open job incomplete"));
            self.svc
                .files()
                .finish(&key, Err(err), Default::default(), self.now);
            self.resume_open_waiters(&key);
            return;
        };
        let now = self.now;
        match self.svc.files().opened(&key, plan, [a, b, c, d], now) {
            AfterOpen::Done => {
                self.jobs.remove(job);
                self.resume_open_waiters(&key);
            }
            AfterOpen::Read(probe, reads) => {
                let Some(j) = self.jobs.get_mut(job) else {
                    return;
                };
                for &(which, _, len) in &reads {
                    j.bodies[which] = Some(vec![0u8; len]);
                }
                j.probe = Some(probe);
                for (which, fd, len) in reads {
                    let Some(buf) = j.bodies[which].as_mut() else {
                        continue;
                    };
                    let entry = read_entry(fd, buf, len);
                    let tok = Token {
                        op: Op::ReadBody,
                        conn: job,
                        conn_gen: which as u32,
                    };
                    // SAFETY: the buffer is a Vec owned by the job, never resized while the
                    // read is in flight, and the fd is owned by the job's probe; the job is
                    // removed only after this op's completion.
                    unsafe { self.sq.push(entry, tok) };
                    j.ops += 1;
                }
                if j.ops == 0 {
                    // Only empty bodies: nothing to read.
                    self.job_read(job);
                }
            }
        }
    }

    /// Every Read of `job` completed.
    fn job_read(&mut self, job: u32) {
        let Some(j) = self.jobs.remove(job) else {
            return;
        };
        let now = self.now;
        let found = match j.probe {
            Some(p) => Ok(Found::File(p)),
            None => Err(ServeError::Io(io::Error::other("open job without files"))),
        };
        self.svc.files().finish(&j.key, found, j.bodies, now);
        self.resume_open_waiters(&j.key);
    }

    /// The job for `key` finished: answer the requests that waited on it.
    pub(super) fn resume_open_waiters(&mut self, key: &[u8]) {
        if let Some(waiters) = self.open_waiters.remove(key) {
            let now = self.now;
            for (idx, gen) in waiters {
                if let Some(c) = self.conns.get_mut(idx, gen) {
                    c.waiting_open = false;
                    c.session.resume(&mut self.svc, now);
                    self.ready.push((idx, gen));
                }
            }
        }
        self.svc.files().forget_outcome(key);
    }

    /// Note that connection (idx, gen) waits on an open job, if its session just parked.
    pub(super) fn note_parked(&mut self, idx: u32, gen: u32) {
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        if c.waiting_open {
            return;
        }
        let Some(key) = c.session.parked() else {
            return;
        };
        if !self.svc.files().job_pending(key) {
            // Its job already finished (a path refused without opening anything, within the
            // same pass that parked this request on it): the outcome is in place, go on.
            let now = self.now;
            c.session.resume(&mut self.svc, now);
            self.ready.push((idx, gen));
            return;
        }
        c.waiting_open = true;
        self.open_waiters
            .entry(key.into())
            .or_default()
            .push((idx, gen));
    }
}

/// A Read of `len` bytes from offset 0 of `fd` into `buf`.
fn read_entry(fd: RawFd, buf: &mut [u8], len: usize) -> io_uring::squeue::Entry {
    opcode::Read::new(types::Fd(fd), buf.as_mut_ptr(), len as u32)
        .offset(0)
        .build()
}
