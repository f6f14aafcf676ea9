//! The io_uring driver: a per-core completion loop (multishot accept, multishot recv into a
//! provided-buffer ring, send, splice through a bounded pipe pool, timeouts).

use super::{DriverError, WorkerCtx};

pub fn run(ctx: WorkerCtx) -> Result<(), DriverError> {
    let _ = ctx;
    todo!("uring driver")
}
