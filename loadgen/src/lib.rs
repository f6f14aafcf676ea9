//! loadgen: ringd's HTTP/1.1 load generator.
//!
//! ```text
//!  cli.rs ─► config.rs (RunConfig, split per thread) ─► run.rs (preflight, pinned threads,
//!            progress, server CPU sampling, join + merge) ─► result.rs ─► report/
//!                                │
//!            engine.rs  one io_uring loop per thread (connect, multishot recv into a
//!                       provided-buffer ring, batched sends, ns waits)
//!            client.rs  connection state machine driven by completions; schedule.rs decides
//!                       when requests are due; conn.rs holds one connection; parse.rs parses
//!                       responses in place; record.rs/hist.rs/stats.rs measure
//!  compare.rs  several targets interleaved over rounds ─► report/{md,html,json}.rs
//!  merge.rs    `--shard` results added exactly (histograms bucket by bucket) into one result
//! ```
//!
//! Latency in open loop (`-R`) is measured from each request's intended send time
//! (coordinated-omission corrected), with the uncorrected figure kept beside it.

pub mod bufring;
pub mod client;
pub mod compare;
pub mod config;
pub mod conn;
pub mod engine;
pub mod hist;
pub mod merge;
pub mod parse;
pub mod procstat;
pub mod record;
pub mod report;
pub mod result;
pub mod run;
pub mod schedule;
pub mod stats;
pub mod target;
pub mod threshold;
pub mod tls;
