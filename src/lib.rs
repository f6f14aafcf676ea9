//! ringd: a thread-per-core HTTP/1.1 static file server on io_uring.
//!
//! ```text
//! cli (flags) → Config → worker (one pinned thread per core, own SO_REUSEPORT listener)
//!   → driver (uring | epoll | tokio-uring): the only code that does I/O
//!     → session (sans-IO: proto parses and frames, handler resolves files)
//!       → Output::Bytes / Output::File back to the driver (send, splice, sendfile)
//! ```
//! Nothing below the drivers touches a socket, a clock or a flag: time comes in as `now`.

pub mod cache;
pub mod config;
pub mod doctor;
pub mod driver;
pub mod gateway;
pub mod handler;
pub mod health;
pub mod proto;
pub mod router;
pub mod session;
pub mod sys;
pub mod tls;
pub mod worker;
