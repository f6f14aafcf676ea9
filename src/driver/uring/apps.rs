//! The uring driver's side of the WSGI source (in `ringd-wsgi`, the Python package, which
//! installs an app queue before the workers start): the calls, their flows and the exchange
//! are `driver::app`'s, shared with the epoll driver. What is the ring's is the wake-up: the
//! app threads post news to the worker's `Notify`, which adds to an eventfd; the driver keeps
//! one multishot `PollAdd` on that eventfd, and each completion reads it (resetting it) and
//! drives the connections whose current call has news.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use io_uring::{opcode, types};

use super::conn::Phase;
use super::token::{Op, Token};
use super::Driver;
use crate::driver::app::{self, Notify};

/// Calls moved along per connection per drive before yielding.
const APP_STEPS: usize = 16;

/// The worker's app plumbing (present only where an app queue is installed).
pub(super) struct Apps {
    notify: Arc<Notify>,
    /// The eventfd `notify` adds to (a dup of its own).
    fd: std::os::fd::OwnedFd,
    /// user_data of the armed multishot poll on `fd`.
    poll: Option<u64>,
    serial: u64,
    ready: Vec<(usize, u64)>,
}

impl Apps {
    /// The plumbing, if this process hosts an app queue.
    pub(super) fn new() -> std::io::Result<Option<Apps>> {
        if app::installed().is_none() {
            return Ok(None);
        }
        let fd = crate::sys::eventfd()?;
        let theirs = fd.try_clone()?;
        Ok(Some(Apps {
            notify: Arc::new(Notify::with_eventfd(theirs)),
            fd,
            poll: None,
            serial: 0,
            ready: Vec::new(),
        }))
    }

    /// user_data of the armed poll, for the exit's cancel.
    pub(super) fn armed(&self) -> Option<u64> {
        self.poll
    }
}

impl Driver {
    /// Arms the multishot poll on the app eventfd (when there is one and it is not armed).
    pub(super) fn arm_app_poll(&mut self) {
        let Some(a) = self.apps.as_mut() else {
            return;
        };
        if a.poll.is_some() || self.exiting {
            return;
        }
        let entry = opcode::PollAdd::new(types::Fd(a.fd.as_raw_fd()), libc::POLLIN as u32)
            .multi(true)
            .build();
        // SAFETY: no buffer; the eventfd belongs to the driver, which outlives the op (its
        // exit cancels it and waits for the last completion).
        a.poll = Some(unsafe { self.sq.push(entry, Token::global(Op::AppWake)) });
    }

    /// The app eventfd was written to: drive the connections whose call has news.
    pub(super) fn on_app_wake(&mut self, res: i32, more: bool) {
        let Some(a) = self.apps.as_mut() else {
            return;
        };
        if !more {
            a.poll = None;
        }
        if res >= 0 || res == -libc::ECANCELED {
            // Reset the counter so that the next post is a new wake-up.
            let _ = crate::sys::eventfd_read(a.fd.as_fd());
        }
        a.notify.drain(&mut a.ready);
        for &(slot, serial) in &a.ready {
            let Some((gen, c)) = self.conns.get_any(slot as u32) else {
                continue;
            };
            if c.app.as_ref().is_some_and(|x| x.serial == serial) {
                self.ready.push((slot as u32, gen));
            }
        }
        // Kept (with its capacity) for the next wake-up.
        a.ready.clear();
        if !more && res != -libc::ECANCELED {
            self.arm_app_poll();
        }
    }

    /// Moves the WSGI call of connection (idx, gen) along, if its exchange has one: queue it,
    /// hand over the request body, relay what the app sent while the client keeps up, and
    /// release it (cancelling the call) when the exchange is finished.
    pub(super) fn drive_app(&mut self, idx: u32, gen: u32) {
        let now = self.now;
        let Some(a) = self.apps.as_mut() else {
            return;
        };
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        if c.phase != Phase::Open {
            return;
        }
        let mut cx = app::Ctx {
            notify: Some(&a.notify),
            token: idx as usize,
            serial: &mut a.serial,
        };
        for _ in 0..APP_STEPS {
            if !app::drive(&mut c.app, &mut c.session, &mut self.svc, &mut cx, now) {
                return;
            }
        }
        self.later.push((idx, gen));
    }
}
