//! The tokio-uring driver: one tokio-uring runtime per pinned worker, a task per connection.

use super::{DriverError, WorkerCtx};

pub fn run(ctx: WorkerCtx) -> Result<(), DriverError> {
    let _ = ctx;
    todo!("tokio-uring driver")
}
