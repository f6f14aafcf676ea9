//! The uring driver's CGI scripts: the process, its pipes and the exchange are
//! `cgi_proc`'s, shared with the epoll driver; what is the ring's is how a pipe that answered
//! EAGAIN gets waited for: a one-shot `PollAdd` (POLLOUT on stdin, POLLIN on stdout and
//! stderr) under the connection's token, at most one per pipe, counted in the connection's
//! `ops`. Its completion drives the connection again, which retries the pipe. A pipe closed
//! while its poll is in flight gets that poll cancelled by its `user_data` (the kernel holds
//! its own reference to the pipe meanwhile), so a finished script never keeps a connection
//! from being freed.

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types};
use mio::event::Source;

use super::conn::{Conn, Phase};
use super::ring::Sq;
use super::token::{Op, Token};
use super::Driver;
use crate::driver::cgi_proc::{self, Pipe, Watch};

/// Size of the worker's buffer for reading scripts' stdout and stderr.
const CGI_BUF: usize = 64 * 1024;
/// Pipe reads and writes per connection per drive; the rest comes back on the next pass.
const CGI_BUDGET: usize = 32;

/// The uring [`Watch`]: one-shot polls on the pipes that blocked.
struct UringWatch<'a> {
    sq: &'a mut Sq,
    ops: &'a mut u32,
    polls: &'a mut [Option<u64>; 3],
    idx: u32,
    gen: u32,
}

impl Watch for UringWatch<'_> {
    fn attach(&mut self, _: Pipe, _: &mut dyn Source) -> io::Result<()> {
        Ok(())
    }

    fn blocked(&mut self, pipe: Pipe, fd: RawFd) {
        let slot = &mut self.polls[pipe as usize];
        if slot.is_some() {
            return;
        }
        let events = match pipe {
            Pipe::Stdin => libc::POLLOUT,
            Pipe::Stdout | Pipe::Stderr => libc::POLLIN,
        };
        let entry = opcode::PollAdd::new(types::Fd(fd), events as u32).build();
        let tok = Token {
            op: Op::CgiPoll(pipe as u8),
            conn: self.idx,
            conn_gen: self.gen,
        };
        // SAFETY: a poll carries no buffer of ours. The pipe stays open while the poll is
        // armed, and a pipe closed before its poll completes gets the poll cancelled by its
        // user_data (`detach`); the connection is freed only once this op has completed
        // (counted in `ops`).
        *slot = Some(unsafe { self.sq.push(entry, tok) });
        *self.ops += 1;
    }

    fn detach(&mut self, pipe: Pipe, _: &mut dyn Source) {
        if let Some(ud) = self.polls[pipe as usize].take() {
            let tok = Token {
                op: Op::CgiCancel,
                conn: self.idx,
                conn_gen: self.gen,
            };
            // SAFETY: AsyncCancel carries no buffer; `ud` names the pipe's poll, whose
            // completion (-ECANCELED, or its event if it came first) is still to come.
            unsafe { self.sq.push(opcode::AsyncCancel::new(ud).build(), tok) };
            *self.ops += 1;
        }
    }
}

impl Driver {
    /// Moves the CGI script of connection (idx, gen) along, if its exchange has one: spawn,
    /// feed stdin, log stderr, relay stdout while the client keeps up, put the script down
    /// when the exchange is done.
    pub(super) fn drive_cgi(&mut self, idx: u32, gen: u32) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        if c.phase != Phase::Open {
            return;
        }
        let has = c.cgi.is_some() || c.session.gateway().is_some_and(|x| x.cgi.is_some());
        if !has {
            return;
        }
        if self.cgi_buf.is_empty() {
            self.cgi_buf = vec![0; CGI_BUF];
        }
        let Conn {
            cgi,
            session,
            ops,
            cgi_polls,
            ..
        } = c;
        let mut watch = UringWatch {
            sq: &mut self.sq,
            ops,
            polls: cgi_polls,
            idx,
            gen,
        };
        let mut cx = cgi_proc::Ctx {
            watch: &mut watch,
            procs: &mut self.procs,
            max: self.cgi_max,
        };
        let mut budget = CGI_BUDGET;
        while cgi_proc::drive(
            cgi,
            session,
            &mut self.svc,
            &mut cx,
            &mut self.cgi_buf,
            now,
            &mut budget,
        ) {
            if budget == 0 {
                // Spent: the rest on the next pass, after the other connections' turn.
                self.later.push((idx, gen));
                return;
            }
        }
    }

    /// A poll on one of a script's pipes completed (ready, failed or cancelled): the next
    /// drive retries the pipe, which reports any error itself.
    pub(super) fn on_cgi_poll(&mut self, tok: Token, ud: u64, pipe: u8) {
        let (idx, gen) = (tok.conn, tok.conn_gen);
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return; // cannot happen: a connection outlives its ops
        };
        c.ops -= 1;
        if let Some(slot) = c.cgi_polls.get_mut(pipe as usize) {
            if *slot == Some(ud) {
                *slot = None;
            }
        }
        self.drive(idx, gen);
    }

    /// The connection is closing (or freed): its script, if any, is put down at once
    /// (SIGTERM to its group, SIGKILL later) and its pipes' polls are cancelled.
    pub(super) fn cgi_close(&mut self, idx: u32, gen: u32) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        let Some(p) = c.cgi.take() else {
            return;
        };
        let mut watch = UringWatch {
            sq: &mut self.sq,
            ops: &mut c.ops,
            polls: &mut c.cgi_polls,
            idx,
            gen,
        };
        self.procs.retire(p, &mut watch, true, now);
    }
}
