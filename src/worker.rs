//! Spawning and pinning workers, binding their SO_REUSEPORT listeners, shutdown signalling.
