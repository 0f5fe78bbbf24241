//! Cache-line padding.

/// A value alone on its cache lines, so that threads working on neighbouring shards do not
/// invalidate each other's caches. 128 bytes covers the adjacent-line prefetching of current
/// x86 parts and the line size of Apple's ARM parts.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);
