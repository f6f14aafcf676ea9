//! Static files: path resolution confined to the root, conditional requests, ranges,
//! precompressed variants, per-worker open-file cache.
