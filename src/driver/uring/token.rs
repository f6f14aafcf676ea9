//! The token slab: every submission's `user_data` is a slot index plus that slot's generation,
//! never a pointer. A completion finds its token by `user_data`; a stale `user_data` (slot
//! freed and reused) never matches, so an `AsyncCancel` can only hit the op it was aimed at.

/// What an in-flight operation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Multishot accept on the listener.
    Accept,
    /// Multishot recv into the provided-buffer ring.
    Recv,
    /// Send of an `Output::Bytes` prefix.
    Send,
    /// Splice file → pipe (pages not in the page cache: io-wq may wait for the disk).
    SpliceIn,
    /// Poll for POLLOUT after a send/splice answered -EAGAIN.
    PollOut,
    /// Poll for POLLIN on the client socket before the next splice into its upstream-bound
    /// pipe.
    PollInUp,
    /// Read file → the connection's copy buffer (no splice pipe exists or can be made).
    ReadFile,
    /// Send from the connection's copy buffer.
    SendBuf,
    /// AsyncCancel of one op or of every op on a connection's fd.
    Cancel,
    /// The housekeeping timeout (one per tick).
    Tick,
    /// Poll on the shutdown eventfd.
    Shutdown,
    /// OpenAt2 of an open job (`conn`: the job, `conn_gen`: which path).
    Open,
    /// Read of a small body for an open job (`conn`: the job, `conn_gen`: which body).
    ReadBody,
    /// An op on a connection's upstream socket (`gw.rs`); the `u32` is that socket's serial
    /// within the connection, so a completion for a socket already replaced (retry) or
    /// retired (finished, abandoned) is told apart from one for the current socket.
    Up(UpOp, u32),
    /// Poll on one of a CGI script's pipes (`cgi.rs`; the `u8` is `cgi_proc::Pipe`).
    CgiPoll(u8),
    /// AsyncCancel of such a poll, its pipe being closed.
    CgiCancel,
    /// Multishot poll on the WSGI app threads' eventfd (`apps.rs`).
    AppWake,
}

/// What an upstream op is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpOp {
    /// Poll for POLLOUT while a non-blocking connect is in progress.
    Connect,
    /// Send of the request bytes copied into the upstream's own buffer.
    Send,
    /// Recv into the upstream's own buffer.
    Recv,
    /// Poll for POLLIN / POLLOUT after a recv / send answered -EAGAIN.
    PollIn,
    PollOut,
    /// AsyncCancel of every op on a retired upstream socket.
    Cancel,
}

impl Op {
    /// Whether the op belongs to a connection (counted in its outstanding ops).
    pub fn is_conn_op(self) -> bool {
        matches!(
            self,
            Op::Recv
                | Op::Send
                | Op::SpliceIn
                | Op::PollOut
                | Op::PollInUp
                | Op::ReadFile
                | Op::SendBuf
                | Op::Cancel
                | Op::Up(..)
                | Op::CgiPoll(_)
                | Op::CgiCancel
        )
    }
}

/// One in-flight operation: what it is and, for connection ops, which connection
/// (slot index + the connection's generation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub op: Op,
    pub conn: u32,
    pub conn_gen: u32,
}

impl Token {
    /// A token for an op that belongs to no connection.
    pub fn global(op: Op) -> Token {
        Token {
            op,
            conn: u32::MAX,
            conn_gen: 0,
        }
    }
}

struct Slot {
    gen: u32,
    token: Option<Token>,
}

/// Slab of in-flight tokens with a free list. `user_data = (generation << 32) | index`.
#[derive(Default)]
pub struct Tokens {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

impl Tokens {
    /// Store a token; returns the `user_data` to submit with.
    pub fn insert(&mut self, token: Token) -> u64 {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    token: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[idx as usize];
        debug_assert!(slot.token.is_none());
        slot.token = Some(token);
        self.live += 1;
        (u64::from(slot.gen) << 32) | u64::from(idx)
    }

    fn slot(&self, user_data: u64) -> Option<&Slot> {
        let idx = (user_data & 0xffff_ffff) as usize;
        let gen = (user_data >> 32) as u32;
        self.slots
            .get(idx)
            .filter(|s| s.gen == gen && s.token.is_some())
    }

    /// The live token for `user_data`, if any.
    pub fn get(&self, user_data: u64) -> Option<Token> {
        self.slot(user_data).and_then(|s| s.token)
    }

    /// Free the token for `user_data` (its op will complete no more); returns it.
    pub fn remove(&mut self, user_data: u64) -> Option<Token> {
        self.slot(user_data)?;
        let idx = (user_data & 0xffff_ffff) as u32;
        let slot = &mut self.slots[idx as usize];
        let t = slot.token.take();
        slot.gen = slot.gen.wrapping_add(1);
        self.free.push(idx);
        self.live -= 1;
        t
    }

    /// Tokens in flight.
    pub fn live(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(op: Op, conn: u32) -> Token {
        Token {
            op,
            conn,
            conn_gen: 7,
        }
    }

    #[test]
    fn insert_get_remove() {
        let mut s = Tokens::default();
        let a = s.insert(t(Op::Recv, 1));
        let b = s.insert(t(Op::Send, 2));
        assert_ne!(a, b);
        assert_eq!(s.live(), 2);
        assert_eq!(s.get(a), Some(t(Op::Recv, 1)));
        assert_eq!(s.remove(a), Some(t(Op::Recv, 1)));
        assert_eq!(s.get(a), None);
        assert_eq!(s.remove(a), None, "double free is refused");
        assert_eq!(s.live(), 1);
    }

    #[test]
    fn reused_slot_gets_new_generation() {
        let mut s = Tokens::default();
        let a = s.insert(t(Op::Recv, 1));
        s.remove(a);
        let b = s.insert(t(Op::Send, 3));
        assert_eq!(a & 0xffff_ffff, b & 0xffff_ffff, "slot reused");
        assert_ne!(a, b, "but not the user_data");
        assert_eq!(s.get(a), None, "a stale user_data never matches");
        assert_eq!(s.get(b), Some(t(Op::Send, 3)));
    }

    #[test]
    fn unknown_user_data_is_ignored() {
        let mut s = Tokens::default();
        assert_eq!(s.get(12345), None);
        assert_eq!(s.remove(u64::MAX), None);
    }

    #[test]
    fn many_tokens_stay_distinct() {
        let mut s = Tokens::default();
        let uds: Vec<u64> = (0..1000).map(|i| s.insert(t(Op::Recv, i))).collect();
        for (i, ud) in uds.iter().enumerate() {
            assert_eq!(s.get(*ud).unwrap().conn, i as u32);
        }
        for ud in &uds {
            s.remove(*ud);
        }
        assert_eq!(s.live(), 0);
    }
}
