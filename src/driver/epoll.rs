//! The epoll driver: a per-core mio readiness loop with sendfile(2) for file bodies.

use super::{DriverError, WorkerCtx};

pub fn run(ctx: WorkerCtx) -> Result<(), DriverError> {
    let _ = ctx;
    todo!("epoll driver")
}
