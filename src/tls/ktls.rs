//! Kernel TLS detection: whether this kernel offers the `tls` upper-layer protocol, so that
//! record encryption could move into the socket after the handshake. Detected, never assumed;
//! ringd runs the userspace record layer in either case (the offload is not implemented).

use std::os::fd::AsRawFd;

/// What the kernel says about kernel TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ktls {
    /// `setsockopt(TCP_ULP, "tls")` works on a connected TCP socket.
    Available,
    /// It does not; the reason (errno, or the module is missing from the ULP list).
    Absent(String),
}

/// Probes with a loopback connection: `TCP_ULP` needs an established socket. Also reads
/// `/proc/sys/net/ipv4/tcp_available_ulp` for the message.
pub fn probe() -> Ktls {
    let listed = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .map(|s| s.split_whitespace().any(|u| u == "tls"))
        .unwrap_or(false);
    let Ok(l) = std::net::TcpListener::bind("127.0.0.1:0") else {
        return Ktls::Absent("cannot open a loopback socket to probe".into());
    };
    let Ok(addr) = l.local_addr() else {
        return Ktls::Absent("cannot open a loopback socket to probe".into());
    };
    let Ok(c) = std::net::TcpStream::connect(addr) else {
        return Ktls::Absent("cannot connect a loopback socket to probe".into());
    };
    let ulp = b"tls";
    // SAFETY: setsockopt reads `ulp.len()` bytes from a live stack array; the fd is owned by
    // `c`, open for the whole call.
    let rc = unsafe {
        libc::setsockopt(
            c.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_ULP,
            ulp.as_ptr().cast(),
            ulp.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Ktls::Available;
    }
    let e = std::io::Error::last_os_error();
    Ktls::Absent(if listed {
        format!("TCP_ULP \"tls\" refused: {e}")
    } else {
        format!("the `tls` module is not loaded (modprobe tls) and TCP_ULP refused: {e}")
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_answers_either_way() {
        // Whatever this kernel offers, the probe must say so without panicking.
        match super::probe() {
            super::Ktls::Available => {}
            super::Ktls::Absent(why) => assert!(!why.is_empty()),
        }
    }
}
