//! Ring setup (SINGLE_ISSUER + DEFER_TASKRUN with clean fallbacks), opcode probing, the
//! submission queue with its never-drop backlog, and the provided-buffer ring for recv.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{opcode, squeue, types, IoUring};

use super::token::{Token, Tokens};

/// Submission queue entries per worker ring.
pub const SQ_ENTRIES: u32 = 1024;
/// Completion queue entries (multishot ops post many completions per submission).
pub const CQ_ENTRIES: u32 = 8 * SQ_ENTRIES;
/// Cap on io-wq workers per ring: [bounded (files), unbounded (sockets, splice)].
pub const IOWQ_MAX_WORKERS: [u32; 2] = [4, 4];

/// Which optional setup flags the ring got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetupFlags {
    pub single_issuer: bool,
    pub defer_taskrun: bool,
    pub coop_taskrun: bool,
}

impl SetupFlags {
    /// Flag sets to try, best first; the last one asks for nothing optional.
    const LADDER: [SetupFlags; 4] = [
        SetupFlags {
            single_issuer: true,
            defer_taskrun: true,
            coop_taskrun: true,
        },
        SetupFlags {
            single_issuer: true,
            defer_taskrun: true,
            coop_taskrun: false,
        },
        SetupFlags {
            single_issuer: true,
            defer_taskrun: false,
            coop_taskrun: true,
        },
        SetupFlags {
            single_issuer: false,
            defer_taskrun: false,
            coop_taskrun: false,
        },
    ];

    fn describe(self) -> String {
        let mut v = Vec::new();
        if self.single_issuer {
            v.push("SINGLE_ISSUER");
        }
        if self.defer_taskrun {
            v.push("DEFER_TASKRUN");
        }
        if self.coop_taskrun {
            v.push("COOP_TASKRUN");
        }
        if v.is_empty() {
            "no optional flags".to_string()
        } else {
            v.join(" + ")
        }
    }
}

/// Build a ring with the best setup flags this kernel accepts. EINVAL on a flag set means
/// "unknown flag": try the next; any other error (EPERM from kernel.io_uring_disabled,
/// ENOSYS, ENOMEM) is final. `taskrun_flag` (for `--busy-poll`) asks the kernel to raise
/// IORING_SQ_TASKRUN when task work is queued, an extra atomic on every waker's path, so it
/// is set only when the loop will poll that flag.
pub fn build(
    sq_entries: u32,
    cq_entries: u32,
    taskrun_flag: bool,
) -> io::Result<(IoUring, SetupFlags)> {
    let mut last = None;
    for flags in SetupFlags::LADDER {
        let mut b = IoUring::builder();
        b.setup_cqsize(cq_entries).setup_clamp();
        if flags.single_issuer {
            b.setup_single_issuer();
        }
        if flags.defer_taskrun {
            b.setup_defer_taskrun();
        }
        if flags.coop_taskrun {
            b.setup_coop_taskrun();
        }
        if taskrun_flag && (flags.defer_taskrun || flags.coop_taskrun) {
            // IORING_SQ_TASKRUN then tells the loop, without a syscall, that task work (a
            // socket became readable, a timer fired) waits to be run: what --busy-poll polls.
            b.setup_taskrun_flag();
        }
        match b.build(sq_entries) {
            Ok(ring) => return Ok((ring, flags)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("io_uring setup failed")))
}

/// Describe setup flags for logs and `ringd doctor`.
pub fn describe(flags: SetupFlags) -> String {
    flags.describe()
}

/// Cap the ring's io-wq workers at `IOWQ_MAX_WORKERS` (Linux 5.15+).
pub fn cap_iowq(ring: &IoUring) -> io::Result<()> {
    let mut cap = IOWQ_MAX_WORKERS;
    ring.submitter().register_iowq_max_workers(&mut cap)
}

/// Keep the ring's io-wq workers (which run every splice) on the CPUs the calling worker
/// thread may use: otherwise they float to other cores, and with them the socket send and
/// loopback receive work, which then competes with whatever else runs there.
pub fn pin_iowq_to_current(ring: &IoUring) -> io::Result<()> {
    let set = crate::sys::thread_affinity()?;
    ring.submitter().register_iowq_aff(&set)
}

/// The opcodes the uring driver submits, with the names `ringd doctor` shows, and whether
/// the driver cannot run without them.
pub const OPCODES: [(&str, u8, bool); 12] = [
    ("Accept (multishot)", opcode::AcceptMulti::CODE, true),
    ("Recv (multishot)", opcode::RecvMulti::CODE, true),
    ("Send", opcode::Send::CODE, true),
    ("Splice", opcode::Splice::CODE, true),
    ("Timeout", opcode::Timeout::CODE, true),
    ("AsyncCancel", opcode::AsyncCancel::CODE, true),
    ("PollAdd", opcode::PollAdd::CODE, true),
    ("ProvideBuffers", opcode::ProvideBuffers::CODE, false),
    ("OpenAt2", opcode::OpenAt2::CODE, false),
    ("Statx", opcode::Statx::CODE, false),
    ("Close", opcode::Close::CODE, false),
    ("Read", opcode::Read::CODE, false),
];

/// Which of `OPCODES` the kernel supports (same order).
pub fn probe(ring: &IoUring) -> io::Result<Vec<bool>> {
    let mut p = io_uring::Probe::new();
    ring.submitter().register_probe(&mut p)?;
    Ok(OPCODES
        .iter()
        .map(|(_, code, _)| p.is_supported(*code))
        .collect())
}

/// The names of required opcodes the kernel lacks.
pub fn missing_required(ring: &IoUring) -> io::Result<Vec<&'static str>> {
    let have = probe(ring)?;
    Ok(OPCODES
        .iter()
        .zip(have)
        .filter(|((_, _, required), ok)| *required && !ok)
        .map(|((name, _, _), _)| *name)
        .collect())
}

/// The ring with its token slab and a backlog for entries that did not fit in the SQ.
pub struct Sq {
    pub ring: IoUring,
    pub tokens: Tokens,
    /// Entries not yet in the SQ, each with "linked to the next one" (part of a chain).
    backlog: VecDeque<squeue::Entry>,
}

impl Sq {
    pub fn new(ring: IoUring) -> Sq {
        Sq {
            ring,
            tokens: Tokens::default(),
            backlog: VecDeque::new(),
        }
    }

    /// Register `token` and queue `entry` under its user_data; returns the user_data. A full
    /// SQ spills into the backlog: nothing is ever dropped.
    ///
    /// # Safety
    /// Every buffer and fd `entry` points at must stay valid until its completion arrives
    /// (the caller's `// SAFETY:` says what keeps them alive).
    pub unsafe fn push(&mut self, entry: squeue::Entry, token: Token) -> u64 {
        let ud = self.tokens.insert(token);
        let entry = entry.user_data(ud);
        if self.backlog.is_empty() {
            // SAFETY: validity of the entry's memory is the caller's obligation (see above).
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return ud;
            }
        }
        self.backlog.push_back(entry);
        ud
    }

    /// Move backlog entries into the SQ, submitting to make room when it fills.
    pub fn flush_backlog(&mut self) -> io::Result<()> {
        while let Some(entry) = self.backlog.front() {
            let full = self.ring.submission().is_full();
            if full {
                match self.ring.submit() {
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EINTR)) => {
                        return Ok(())
                    }
                    Err(e) => return Err(e),
                }
                if self.ring.submission().is_full() {
                    return Ok(());
                }
            }
            // SAFETY: entries entered the backlog through `push`, whose callers vouched for
            // their memory until completion; room was checked above.
            let pushed = unsafe { self.ring.submission().push(entry) };
            debug_assert!(pushed.is_ok());
            self.backlog.pop_front();
        }
        Ok(())
    }

    /// Entries waiting in the backlog.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }
}

/// A provided-buffer ring (IORING_REGISTER_PBUF_RING): `count` buffers of `size` bytes the
/// kernel picks from for multishot recv. A buffer handed out in a completion belongs to us
/// until `recycle` gives it back.
pub struct BufRing {
    /// Page-aligned `count` entries shared with the kernel (mmap).
    entries: *mut types::BufRingEntry,
    entries_len: usize,
    /// The buffers themselves, `count * size` bytes, never moved while registered.
    mem: Box<[u8]>,
    size: usize,
    count: u16,
    tail: u16,
    bgid: u16,
}

impl BufRing {
    /// Allocate, fill and register a buffer ring with group id `bgid`. `count` must be a
    /// power of two (at most 32768).
    pub fn new(ring: &IoUring, bgid: u16, count: u16, size: usize) -> io::Result<BufRing> {
        assert!(
            count.is_power_of_two(),
            "buffer ring size must be a power of two"
        );
        let entries_len = usize::from(count) * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: anonymous private mapping; no pointer arguments besides NULL.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                entries_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut br = BufRing {
            entries: ptr.cast(),
            entries_len,
            mem: vec![0u8; usize::from(count) * size].into_boxed_slice(),
            size,
            count,
            tail: 0,
            bgid,
        };
        for bid in 0..count {
            br.write_entry(bid);
        }
        br.publish();
        // SAFETY: `entries` (count entries, page aligned) and `mem` live in `br` until it is
        // dropped, and `Drop` unregisters the group first (or the ring is already gone).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(br.entries as u64, count, bgid, 0)?;
        }
        Ok(br)
    }

    /// The buffer group id to name in RecvMulti.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// The first `len` bytes of buffer `bid`, as filled by a completion.
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * self.size;
        &self.mem[start..start + len.min(self.size)]
    }

    fn write_entry(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.count - 1));
        let addr = self.mem.as_ptr() as u64 + (usize::from(bid) * self.size) as u64;
        // SAFETY: idx < count, so the entry lies inside the mapping. The kernel only reads
        // entries between its head and our published tail; this one is past the tail.
        // Writing the fields individually leaves entry 0's `resv` (the shared tail) intact.
        unsafe {
            let e = &mut *self.entries.add(idx);
            e.set_addr(addr);
            e.set_len(self.size as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lies inside entry 0 of the mapping, is 2-byte aligned, and
        // the kernel reads it atomically; Release orders the entry writes before it.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries) as *mut u16;
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    /// Give buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        if bid < self.count {
            self.write_entry(bid);
            self.publish();
        }
    }

    /// Unregister from `ring` (call before the ring is dropped, when no recv is in flight).
    pub fn unregister(&self, ring: &IoUring) {
        let _ = ring.submitter().unregister_buf_ring(self.bgid);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `new` with this length; the driver drops the
        // BufRing only once no recv can still be writing (all ops completed, or it leaks the
        // BufRing instead).
        unsafe {
            libc::munmap(self.entries.cast(), self.entries_len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_builds_and_probes() {
        let (ring, flags) = build(8, 16, false).expect("io_uring available on the test machine");
        let have = probe(&ring).unwrap();
        assert_eq!(have.len(), OPCODES.len());
        assert!(!describe(flags).is_empty());
        assert!(missing_required(&ring).unwrap().is_empty());
    }

    /// What `--busy-poll` relies on: with the flag asked for, a completion deferred to task
    /// work (here a 1 ms timeout firing) raises IORING_SQ_TASKRUN while the ring sits idle, with
    /// no syscall; without it the flag stays down.
    #[test]
    fn taskrun_flag_shows_pending_task_work() {
        for want in [true, false] {
            let (mut ring, flags) = build(8, 16, want).unwrap();
            if !(flags.defer_taskrun || flags.coop_taskrun) {
                return; // Kernel without either: no flag to test (busy-poll polls the CQ only).
            }
            let ts = types::Timespec::new().nsec(1_000_000);
            let entry = opcode::Timeout::new(&ts).build().user_data(7);
            // SAFETY: `ts` outlives the op: it is read at submission, and the ring is
            // dropped (after the timeout fired) before `ts`.
            unsafe { ring.submission().push(&entry).unwrap() };
            ring.submit().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert_eq!(ring.submission().taskrun(), want, "taskrun_flag {want}");
            ring.submit_and_wait(1).unwrap();
            assert_eq!(ring.completion().next().map(|c| c.user_data()), Some(7));
            assert!(
                !ring.submission().taskrun(),
                "flag cleared once the work ran"
            );
        }
    }

    #[test]
    fn buf_ring_registers_and_recycles() {
        let (ring, _) = build(8, 16, false).unwrap();
        let mut br = BufRing::new(&ring, 3, 8, 256).unwrap();
        assert_eq!(br.get(2, 10).len(), 10);
        assert_eq!(br.get(2, 1000).len(), 256);
        // As if the kernel had handed out buffer 5 and we gave it back.
        br.recycle(5);
        br.recycle(999); // out of range: ignored
        br.unregister(&ring);
    }
}
