//! I/O drivers: each runs one worker's event loop over the shared sans-IO `session`.
//!
//! Every driver exposes `pub fn run(ctx: WorkerCtx) -> Result<(), DriverError>` and returns
//! once shutdown has been requested through `ctx.shutdown` and its connections are closed (or
//! `config.timeouts.shutdown` has passed).

use std::net::TcpListener;
use std::os::fd::OwnedFd;

use crate::config::Config;

pub mod epoll;
#[cfg(feature = "tokio-uring")]
pub mod tokio_uring;
pub mod uring;

/// What one worker thread is handed. Owned by that thread alone.
pub struct WorkerCtx {
    /// Worker index, 0-based.
    pub id: usize,
    /// This worker's copy of the configuration.
    pub config: Config,
    /// Bound, listening, non-blocking socket with SO_REUSEPORT (one per worker).
    pub listener: TcpListener,
    /// `O_PATH | O_DIRECTORY` fd of the served root.
    pub root: OwnedFd,
    /// eventfd that becomes readable when graceful shutdown is requested.
    pub shutdown: OwnedFd,
}

/// Why a driver could not run.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("io_uring setup failed: {0} (is kernel.io_uring_disabled set? try --backend epoll)")]
    UringSetup(std::io::Error),
    #[error("{backend} backend is not available: {why}")]
    Unavailable { backend: &'static str, why: String },
    #[error("I/O error in the event loop: {0}")]
    Io(#[from] std::io::Error),
}
