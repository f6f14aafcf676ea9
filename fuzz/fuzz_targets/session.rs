//! Fuzz target: the whole sans-IO connection (`ringd::session::{Service, Session}`) driven the
//! way a driver drives it, with the input bytes split at arbitrary points, output written in
//! arbitrary pieces, pipelining, and an arbitrary clock (after h2's `fuzz_e2e`).
//!
//! Input: 8 control bytes (byte 0 picks one of the fixture's configs; all 8 seed the PRNG that
//! chooses split points, write sizes, clock steps, wall-clock updates and a rare graceful
//! shutdown), then the byte stream the client sends. Asserts, beyond "no panic":
//! - the output is a valid stream of HTTP/1.1 responses (see `parse_responses`: strict heads,
//!   Content-Length equals the body bytes, none for HEAD/304, nothing after
//!   `Connection: close`, so no body byte after an error response);
//! - exactly one response per complete request, in order, as the unsplit `oracle` computes
//!   them, an error status where the oracle has one, `Connection: close` exactly where the
//!   oracle closes; when the
//!   driver closed the connection on a deadline or a shutdown, a prefix of that;
//! - the buffer contract: a piece handed out by `next_output` keeps its address and contents
//!   across `feed`/`set_time` until consumed;
//! - liveness: an open connection always has a deadline, and a session that wants no input
//!   and has no output must be closing.

#![no_main]

use std::fs::File;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use ringd::session::{Output, Service, Session};
use ringd_fuzz::{oracle, parse_responses, split_control, Fixture, Rng};

/// Reads `len` bytes of `fd` at `offset`, as splice/sendfile would.
fn read_file(fd: i32, offset: u64, len: usize) -> Vec<u8> {
    // SAFETY: the session keeps `fd` open until `consume` covers this piece, and the
    // ManuallyDrop keeps this temporary `File` from closing it.
    let f = ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset)
        .expect("Output::File past the end of its file");
    buf
}

struct Run {
    svc: Service,
    s: Session,
    now: Instant,
    out: Vec<u8>,
}

impl Run {
    /// Writes at most one piece of output (`max` bytes of it); false when none is queued.
    fn write_some(&mut self, max: usize) -> bool {
        let n = match self.s.next_output() {
            None => return false,
            Some(Output::Bytes(b)) => {
                assert!(!b.is_empty(), "empty Output::Bytes");
                let n = b.len().min(max);
                self.out.extend_from_slice(&b[..n]);
                n
            }
            Some(Output::File { fd, offset, len }) => {
                assert!(len > 0, "empty Output::File");
                let n = (len as usize).min(max);
                let bytes = read_file(fd, offset, n);
                self.out.extend_from_slice(&bytes);
                n
            }
            // This driver never says it can splice (`Service::set_can_splice`).
            Some(Output::Pipe { .. }) => panic!("a pipe piece from a driver that cannot splice"),
        };
        self.s.consume(&mut self.svc, n, self.now);
        true
    }

    /// The piece the "kernel" is sending now: address and contents (Bytes only).
    fn in_flight(&mut self) -> Option<(usize, Vec<u8>)> {
        match self.s.next_output() {
            Some(Output::Bytes(b)) => Some((b.as_ptr() as usize, b.to_vec())),
            _ => None,
        }
    }

    fn check_in_flight(&mut self, before: Option<(usize, Vec<u8>)>) {
        let Some((ptr, bytes)) = before else { return };
        match self.s.next_output() {
            Some(Output::Bytes(b)) => {
                assert_eq!(b.as_ptr() as usize, ptr, "in-flight output moved");
                assert!(b.len() >= bytes.len() && b[..bytes.len()] == bytes[..]);
            }
            other => panic!("in-flight output replaced by {other:?}"),
        }
    }

    fn check_live(&mut self) {
        if self.s.should_close() {
            return;
        }
        assert!(
            self.s.deadline().is_some(),
            "open connection without a deadline"
        );
        if !self.s.wants_read() && self.s.next_output().is_none() {
            panic!("session wants no input, has no output and is not closing");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (ctl, stream) = split_control::<8>(data);
    let fx = Fixture::get();
    let (config, roots) = &fx.configs[usize::from(ctl[0]) % fx.configs.len()];
    let mut rng = Rng::new(u64::from_le_bytes(ctl));
    let t0 = Instant::now();
    let mut svc = Service::new(config, roots.clone());
    svc.set_time(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let s = Session::new("192.0.2.1:4000".parse().expect("addr"), t0);
    let mut run = Run {
        svc,
        s,
        now: t0,
        out: Vec::new(),
    };

    let mut fed = 0;
    let mut cut_short = false; // closed by the driver: deadline or shutdown
    let mut shutdown = false;
    let mut steps = 0u32;
    loop {
        steps += 1;
        assert!(steps < 1_000_000, "driver loop does not progress");
        run.check_live();
        if run.s.should_close() {
            break;
        }
        if let Some(d) = run.s.deadline() {
            if run.now >= d {
                cut_short = true;
                break;
            }
        }
        match rng.below(16) {
            // The clock moves: mostly a little, sometimes past a timeout.
            0 => {
                let step = match rng.below(4) {
                    0 => Duration::from_micros(rng.below(1000)),
                    1 => Duration::from_millis(rng.below(1000)),
                    2 => Duration::from_secs(rng.below(30)),
                    _ => Duration::from_secs(rng.below(200)),
                };
                run.now += step;
            }
            1 => {
                let before = run.in_flight();
                let secs = rng.below(1 << 32);
                run.svc
                    .set_time(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
                run.check_in_flight(before);
            }
            2 if rng.below(64) == 0 => {
                run.s.start_shutdown(run.now);
                shutdown = true;
                cut_short = true;
            }
            // Write some output.
            3..=7 => {
                let max = rng.piece(1 << 20);
                run.write_some(max);
            }
            // Read: feed the next piece, when the session wants input.
            _ => {
                if fed == stream.len() {
                    run.s.feed_eof(run.now);
                    // Drain everything.
                    while run.write_some(usize::MAX) {}
                    run.check_live();
                    if !run.s.should_close() && run.s.deadline().is_none() {
                        panic!("after EOF and drain the session neither closes nor times out");
                    }
                    break;
                }
                if run.s.wants_read() {
                    let n = rng.piece(stream.len() - fed);
                    let before = run.in_flight();
                    run.s.feed(&mut run.svc, &stream[fed..fed + n], run.now);
                    run.check_in_flight(before);
                    fed += n;
                } else {
                    run.write_some(usize::MAX);
                }
            }
        }
    }

    let expected = oracle(stream, &config.limits);
    let head_only = |i: usize| expected.get(i).is_some_and(|e| e.head_only);
    let (got, tail) = match parse_responses(&run.out, head_only, cut_short) {
        Ok(r) => r,
        Err(e) => panic!("invalid output framing: {e}"),
    };
    if !cut_short {
        assert!(!tail);
        assert_eq!(
            got.len(),
            expected.len(),
            "responses {got:?} vs expected {expected:?}"
        );
    } else {
        assert!(got.len() <= expected.len(), "{got:?} vs {expected:?}");
    }
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        if e.error.is_some() {
            // The status of a refused request may depend on how its bytes were split (a long,
            // malformed request line is a 400 when the malformed part arrives first, a 414
            // when it arrives whole; see docs/fuzzing.md): only the class is compared.
            assert!(g.status >= 400, "response {i}: {g:?} vs {e:?}");
        } else {
            assert!(
                !matches!(g.status, 413 | 414 | 417 | 431 | 505),
                "response {i}: protocol error status {} for a request the parser accepts",
                g.status
            );
        }
        let is_last = i + 1 == got.len();
        if !(shutdown && is_last) {
            assert_eq!(g.close, e.close, "response {i}: close flag {g:?} vs {e:?}");
        }
    }
});
