//! Thin, safe wrappers over the Linux calls the drivers and worker share (openat2, eventfd,
//! pipes, signals, rlimits).
