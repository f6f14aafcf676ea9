//! A provided-buffer ring for multishot receives: one slab of equal receive buffers whose ids
//! the kernel picks from a shared ring; the engine parses each buffer in place and hands it
//! straight back, publishing the new tail once per completion pass.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// The buffer ring of one io_uring instance.
pub struct BufRing {
    /// The shared ring of buffer descriptors (mmap'd, page aligned).
    ring: NonNull<BufRingEntry>,
    ring_bytes: usize,
    entries: u16,
    /// The slab all buffers live in; never moved or resized while registered.
    slab: Box<[u8]>,
    buf_size: usize,
    /// Our copy of the tail; published to the kernel by [`BufRing::publish`].
    tail: u16,
    bgid: u16,
}

impl BufRing {
    /// Allocate `entries` (a power of two, at most 32768) buffers of `buf_size` bytes and
    /// register them with `ring` as buffer group `bgid`, all available to the kernel.
    pub fn new(ring: &IoUring, entries: u16, buf_size: usize, bgid: u16) -> io::Result<BufRing> {
        assert!(
            entries.is_power_of_two(),
            "buffer count must be a power of two"
        );
        let ring_bytes = entries as usize * std::mem::size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ring_ptr = NonNull::new(ptr.cast::<BufRingEntry>()).expect("mmap returned non-null");
        let mut br = BufRing {
            ring: ring_ptr,
            ring_bytes,
            entries,
            slab: vec![0u8; entries as usize * buf_size].into_boxed_slice(),
            buf_size,
            tail: 0,
            bgid,
        };
        // SAFETY: the ring memory is page aligned, `ring_bytes` long, and lives until `Drop`,
        // which only runs after the caller has dropped (or unregistered from) the io_uring: the
        // engine declares its `IoUring` before its `BufRing`, so the ring is closed first.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                ring_ptr.as_ptr() as u64,
                entries,
                bgid,
                0,
            )?;
        }
        for bid in 0..entries {
            br.recycle(bid);
        }
        br.publish();
        Ok(br)
    }

    /// The buffer group id to name in receive operations.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Size of each buffer.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// The first `len` bytes of buffer `bid`, as filled by a completed receive.
    #[inline]
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        let start = bid as usize * self.buf_size;
        &self.slab[start..start + len.min(self.buf_size)]
    }

    /// Give buffer `bid` back (visible to the kernel after the next [`BufRing::publish`]).
    #[inline]
    pub fn recycle(&mut self, bid: u16) {
        let mask = self.entries - 1;
        let idx = (self.tail & mask) as usize;
        let addr = self.slab.as_ptr() as u64 + bid as u64 * self.buf_size as u64;
        // SAFETY: `idx < entries`, so the entry lies inside the mapping; the kernel only reads
        // entries between its head and our published tail, and this one is past the tail.
        let entry = unsafe { &mut *self.ring.as_ptr().add(idx) };
        entry.set_addr(addr);
        entry.set_len(self.buf_size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publish every recycled buffer to the kernel.
    #[inline]
    pub fn publish(&mut self) {
        // SAFETY: the tail field lives inside the first ring entry of our mapping; the kernel
        // reads it with acquire semantics, so a release store orders the entry writes before it.
        unsafe {
            let tail = BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `new` with this length and is unmapped once. The
        // io_uring that used it is gone by now (see the SAFETY note in `new`).
        unsafe {
            libc::munmap(self.ring.as_ptr().cast(), self.ring_bytes);
        }
    }
}
