//! Kernel TLS: whether this kernel offers the `tls` upper-layer protocol (probed once per
//! process, never assumed), and the one function every driver calls to hand a connection's
//! record layer to the socket after the handshake (`TCP_ULP "tls"`, then `TLS_TX` and
//! `TLS_RX` with the keys and record sequence numbers rustls extracted). After that the
//! socket takes plaintext, so file bodies go by sendfile/splice again (zero copy).
//!
//! The setsockopt structs are written out here from `<linux/tls.h>` (uapi, stable).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rustls::{CipherSuite, ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion};

/// What the kernel says about kernel TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ktls {
    /// `setsockopt(TCP_ULP, "tls")` works on a connected TCP socket.
    Available,
    /// It does not; the reason (errno, or the module is missing from the ULP list).
    Absent(String),
}

/// The probe's answer, asked once per process (the first caller pays for the loopback
/// connection it takes).
pub fn probed() -> &'static Ktls {
    static PROBED: OnceLock<Ktls> = OnceLock::new();
    PROBED.get_or_init(probe)
}

/// Whether kernel TLS can be used in this process.
pub fn available() -> bool {
    *probed() == Ktls::Available
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
    match set_ulp(c.as_raw_fd()) {
        Ok(()) => Ktls::Available,
        Err(e) => Ktls::Absent(if listed {
            format!("TCP_ULP \"tls\" refused: {e}")
        } else {
            format!("the `tls` module is not loaded (modprobe tls) and TCP_ULP refused: {e}")
        }),
    }
}

/// Whether the kernel can run the record layer of this cipher suite (AES-GCM-128/256 and
/// ChaCha20-Poly1305, TLS 1.2 or 1.3). Decided before the secrets are extracted: extraction
/// consumes the rustls connection, so a suite the kernel cannot run stays in user space.
pub fn offloadable(suite: CipherSuite) -> bool {
    matches!(
        suite,
        CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS13_AES_256_GCM_SHA384
            | CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    )
}

/// A connection's record layer, taken out of rustls, for [`enable`]
/// (`Session::take_ktls` makes it).
pub struct Switch {
    pub version: ProtocolVersion,
    /// What `dangerous_extract_secrets` answered (an error cannot happen when the session
    /// said the switch was due; `enable` refuses it, and the connection closes).
    pub secrets: Result<ExtractedSecrets, rustls::Error>,
}

impl std::fmt::Debug for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Switch")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

// <linux/tls.h>
const TLS_TX: libc::c_int = 1;
const TLS_RX: libc::c_int = 2;
const TLS_1_2_VERSION: u16 = 0x0303;
const TLS_1_3_VERSION: u16 = 0x0304;
const TLS_CIPHER_AES_GCM_128: u16 = 51;
const TLS_CIPHER_AES_GCM_256: u16 = 52;
const TLS_CIPHER_CHACHA20_POLY1305: u16 = 54;

/// `struct tls_crypto_info`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CryptoInfo {
    version: u16,
    cipher_type: u16,
}

/// `struct tls12_crypto_info_aes_gcm_128`.
#[repr(C)]
struct AesGcm128 {
    info: CryptoInfo,
    iv: [u8; 8],
    key: [u8; 16],
    salt: [u8; 4],
    rec_seq: [u8; 8],
}

/// `struct tls12_crypto_info_aes_gcm_256`.
#[repr(C)]
struct AesGcm256 {
    info: CryptoInfo,
    iv: [u8; 8],
    key: [u8; 32],
    salt: [u8; 4],
    rec_seq: [u8; 8],
}

/// `struct tls12_crypto_info_chacha20_poly1305` (no salt: the whole 12-byte IV is `iv`).
#[repr(C)]
struct Chacha20Poly1305 {
    info: CryptoInfo,
    iv: [u8; 12],
    key: [u8; 32],
    salt: [u8; 0],
    rec_seq: [u8; 8],
}

/// One direction's `TLS_TX`/`TLS_RX` argument, zeroed when dropped.
enum CryptoArg {
    Gcm128(AesGcm128),
    Gcm256(AesGcm256),
    Chacha(Chacha20Poly1305),
}

impl Drop for CryptoArg {
    fn drop(&mut self) {
        match self {
            CryptoArg::Gcm128(a) => a.key.fill(0),
            CryptoArg::Gcm256(a) => a.key.fill(0),
            CryptoArg::Chacha(a) => a.key.fill(0),
        }
    }
}

/// Copies `src` into `dst` when the lengths agree.
fn fill<const N: usize>(dst: &mut [u8; N], src: &[u8]) -> Result<(), String> {
    if src.len() != N {
        return Err(format!(
            "key material of {} bytes where {N} were expected",
            src.len()
        ));
    }
    dst.copy_from_slice(src);
    Ok(())
}

impl CryptoArg {
    /// The kernel's form of rustls's secrets for one direction. AES-GCM's 12-byte nonce base
    /// is the 4-byte salt followed by the 8-byte `iv` (RFC 5288 for TLS 1.2; TLS 1.3 XORs the
    /// sequence number into the same 12 bytes); ChaCha20-Poly1305 takes all 12 as `iv`.
    fn new(
        version: ProtocolVersion,
        seq: u64,
        s: &ConnectionTrafficSecrets,
    ) -> Result<Self, String> {
        let version = match version {
            ProtocolVersion::TLSv1_2 => TLS_1_2_VERSION,
            ProtocolVersion::TLSv1_3 => TLS_1_3_VERSION,
            v => return Err(format!("{v:?} cannot be offloaded")),
        };
        let rec_seq = seq.to_be_bytes();
        Ok(match s {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
                let mut a = AesGcm128 {
                    info: CryptoInfo {
                        version,
                        cipher_type: TLS_CIPHER_AES_GCM_128,
                    },
                    iv: [0; 8],
                    key: [0; 16],
                    salt: [0; 4],
                    rec_seq,
                };
                let iv = iv.as_ref();
                fill(&mut a.key, key.as_ref())?;
                fill(&mut a.salt, iv.get(..4).unwrap_or_default())?;
                fill(&mut a.iv, iv.get(4..).unwrap_or_default())?;
                CryptoArg::Gcm128(a)
            }
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
                let mut a = AesGcm256 {
                    info: CryptoInfo {
                        version,
                        cipher_type: TLS_CIPHER_AES_GCM_256,
                    },
                    iv: [0; 8],
                    key: [0; 32],
                    salt: [0; 4],
                    rec_seq,
                };
                let iv = iv.as_ref();
                fill(&mut a.key, key.as_ref())?;
                fill(&mut a.salt, iv.get(..4).unwrap_or_default())?;
                fill(&mut a.iv, iv.get(4..).unwrap_or_default())?;
                CryptoArg::Gcm256(a)
            }
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                let mut a = Chacha20Poly1305 {
                    info: CryptoInfo {
                        version,
                        cipher_type: TLS_CIPHER_CHACHA20_POLY1305,
                    },
                    iv: [0; 12],
                    key: [0; 32],
                    salt: [],
                    rec_seq,
                };
                fill(&mut a.key, key.as_ref())?;
                fill(&mut a.iv, iv.as_ref())?;
                CryptoArg::Chacha(a)
            }
            _ => return Err("a cipher the kernel cannot run".into()),
        })
    }

    /// The struct's address and size, for setsockopt.
    fn raw(&self) -> (*const libc::c_void, libc::socklen_t) {
        fn of<T>(t: &T) -> (*const libc::c_void, libc::socklen_t) {
            (
                (t as *const T).cast(),
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        }
        match self {
            CryptoArg::Gcm128(a) => of(a),
            CryptoArg::Gcm256(a) => of(a),
            CryptoArg::Chacha(a) => of(a),
        }
    }
}

/// `setsockopt(fd, SOL_TCP, TCP_ULP, "tls")`.
fn set_ulp(fd: RawFd) -> std::io::Result<()> {
    let ulp = b"tls";
    // SAFETY: setsockopt reads `ulp.len()` bytes from a live static array; `fd` is a socket
    // the caller keeps open for the whole call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_TCP,
            libc::TCP_ULP,
            ulp.as_ptr().cast(),
            ulp.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Hands the record layer of the connected socket `fd` to the kernel: `TCP_ULP "tls"`, then
/// `TLS_TX` and `TLS_RX`. From then on the socket sends and receives plaintext (records
/// other than application data make `recv` fail with EIO: see [`recv_error_is_eof`]).
/// On an error the connection cannot go on (rustls gave its keys away): the caller closes
/// it. Failures are logged at most once per 10 s per thread.
pub fn enable(fd: RawFd, sw: &Switch) -> std::io::Result<()> {
    let res = enable_inner(fd, sw);
    if let Err(e) = &res {
        log_failure(e);
    }
    res
}

fn enable_inner(fd: RawFd, sw: &Switch) -> std::io::Result<()> {
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let secrets = sw
        .secrets
        .as_ref()
        .map_err(|e| bad(format!("rustls gave no secrets: {e}")))?;
    let (tx_seq, tx) = &secrets.tx;
    let (rx_seq, rx) = &secrets.rx;
    let tx = CryptoArg::new(sw.version, *tx_seq, tx).map_err(bad)?;
    let rx = CryptoArg::new(sw.version, *rx_seq, rx).map_err(bad)?;
    clear_notsent_lowat(fd)?;
    set_ulp(fd)?;
    for (dir, arg) in [(TLS_TX, &tx), (TLS_RX, &rx)] {
        let (ptr, len) = arg.raw();
        // SAFETY: `ptr` points at a live `#[repr(C)]` struct of `len` bytes laid out as the
        // kernel's `tls12_crypto_info_*` (owned by `tx`/`rx`, alive until this function
        // returns); the kernel copies it during the call. `fd` is open for the call.
        let rc = unsafe { libc::setsockopt(fd, libc::SOL_TLS, dir, ptr, len) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets `TCP_NOTSENT_LOWAT` back to the kernel's default (0: the sysctl, unlimited unless
/// tuned). Under the 6.1 kernel's software kTLS, a sendfile that stops short (EAGAIN) with
/// a low mark (`notsent_lowat`'s 16 KiB default, and 32 KiB, just above one 16 KiB record)
/// left a record unsent and no EPOLLOUT to come: the transfer stalled for good
/// (`scripts/ktls-uml.sh`, a 10 MiB file). Without the mark it ran through.
fn clear_notsent_lowat(fd: RawFd) -> std::io::Result<()> {
    let zero: libc::c_int = 0;
    // SAFETY: setsockopt reads one c_int from a live local; `fd` is open for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&zero as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether an error from `recv` on a connection that may run kernel TLS means the peer is
/// done: a record that is not application data (close_notify, or a KeyUpdate the kernel
/// cannot follow) makes a plain recv fail with EIO. Plain TCP sockets never fail so.
pub fn recv_error_is_eof(errno: i32) -> bool {
    errno == libc::EIO
}

/// Logs a failed switch, at most once per 10 s on this thread (a worker).
fn log_failure(e: &std::io::Error) {
    thread_local! {
        static LAST: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = Instant::now();
    let due = LAST.with(|l| {
        let due = l
            .get()
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10));
        if due {
            l.set(Some(now));
        }
        due
    });
    if due {
        eprintln!(
            "ringd: kernel TLS setup failed ({e}); the connection was closed (logged at most \
             every 10 s)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_answers_either_way() {
        // Whatever this kernel offers, the probe must say so without panicking.
        match super::probe() {
            super::Ktls::Available => {}
            super::Ktls::Absent(why) => assert!(!why.is_empty()),
        }
        assert_eq!(available(), *probed() == Ktls::Available);
    }

    #[test]
    fn structs_have_the_kernels_sizes() {
        // sizeof from <linux/tls.h> on x86_64 and aarch64.
        assert_eq!(std::mem::size_of::<AesGcm128>(), 40);
        assert_eq!(std::mem::size_of::<AesGcm256>(), 56);
        assert_eq!(std::mem::size_of::<Chacha20Poly1305>(), 56);
    }

    #[test]
    fn gcm_nonce_splits_into_salt_and_iv() {
        let s = ConnectionTrafficSecrets::Aes128Gcm {
            key: rustls::crypto::cipher::AeadKey::from([7u8; 32]),
            iv: rustls::crypto::cipher::Iv::new([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]),
        };
        // AeadKey::from takes 32 bytes; a 16-byte key is its prefix in rustls (`with_length`),
        // which this test cannot make: expect the length check to refuse it.
        assert!(CryptoArg::new(ProtocolVersion::TLSv1_3, 5, &s).is_err());
        let s = ConnectionTrafficSecrets::Aes256Gcm {
            key: rustls::crypto::cipher::AeadKey::from([7u8; 32]),
            iv: rustls::crypto::cipher::Iv::new([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]),
        };
        let a = CryptoArg::new(ProtocolVersion::TLSv1_2, 5, &s).unwrap();
        let CryptoArg::Gcm256(g) = &a else {
            panic!("not AES-256-GCM")
        };
        assert_eq!(g.salt, [1, 2, 3, 4]);
        assert_eq!(g.iv, [5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(g.rec_seq, 5u64.to_be_bytes());
        assert_eq!(g.info.version, TLS_1_2_VERSION);
        assert_eq!(g.info.cipher_type, TLS_CIPHER_AES_GCM_256);
    }

    #[test]
    fn offloadable_suites() {
        assert!(offloadable(CipherSuite::TLS13_AES_128_GCM_SHA256));
        assert!(offloadable(
            CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        ));
        assert!(!offloadable(CipherSuite::TLS_RSA_WITH_AES_128_CBC_SHA));
    }
}
