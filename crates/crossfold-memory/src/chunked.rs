//! An append-only vector stored in fixed-size chunks.
//!
//! The global log and long streams grow to millions of entries. A plain `Vec` doubles by copying
//! everything, and it would do so while a lock is held, stalling every writer for as long as the
//! copy takes. Chunks bound the largest copy to one chunk, and index arithmetic keeps random
//! access O(1).

/// log2 of the chunk size.
const CHUNK_BITS: u32 = 10;
/// Entries per chunk.
const CHUNK: usize = 1 << CHUNK_BITS;

/// An append-only sequence with O(1) push (no large copies) and O(1) indexing.
///
/// The first chunk lives inline, so the many short sequences (most streams) cost one
/// indirection to reach, like a plain `Vec`.
#[derive(Debug)]
pub(crate) struct ChunkedVec<T> {
    /// Entries `0..CHUNK`. Grows like a `Vec` so that short sequences stay small.
    first: Vec<T>,
    /// Entries from `CHUNK` on, `CHUNK` per chunk, each allocated whole so it never moves.
    /// Boxed, and the length derived rather than stored: every stream has one of these in its
    /// map slot, and most never need a second chunk, so the struct stays at 32 bytes.
    #[allow(
        clippy::box_collection,
        reason = "a pointer in the slot instead of a 24-byte vector header, for the rare long stream"
    )]
    rest: Option<Box<Vec<Vec<T>>>>,
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        Self {
            first: Vec::new(),
            rest: None,
        }
    }
}

impl<T> ChunkedVec<T> {
    /// An empty sequence with room for `n` entries before it first grows (at most one chunk).
    ///
    /// Most streams are written once or a few times: a new stream sized to its first append
    /// holds no unused slots, where growing from empty would reserve four.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            first: Vec::with_capacity(n.min(CHUNK)),
            rest: None,
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        match self
            .rest
            .as_deref()
            .and_then(|rest| Some((rest.len(), rest.last()?.len())))
        {
            // The first chunk and all but the last of the others are full.
            Some((chunks, last)) => chunks * CHUNK + last,
            None => self.first.len(),
        }
    }

    /// Appends one entry.
    pub(crate) fn push(&mut self, value: T) {
        if self.rest.is_none() && self.first.len() < CHUNK {
            self.first.push(value);
            return;
        }
        let rest = self.rest.get_or_insert_with(Box::default);
        match rest.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(value),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(value);
                rest.push(chunk);
            }
        }
    }

    fn rest_len(&self) -> usize {
        self.rest.as_deref().map_or(0, Vec::len)
    }

    fn chunk(&self, index: usize) -> Option<&[T]> {
        match index {
            0 => Some(&self.first),
            n => self.rest.as_deref()?.get(n - 1).map(Vec::as_slice),
        }
    }

    /// The entry at `index`.
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.chunk(index >> CHUNK_BITS)?.get(index & (CHUNK - 1))
    }

    /// The entries from `start` on, in order.
    pub(crate) fn iter_from(&self, start: usize) -> impl Iterator<Item = &T> {
        let first_chunk = start >> CHUNK_BITS;
        let offset = start & (CHUNK - 1);
        (first_chunk..=self.rest_len()).flat_map(move |c| {
            let skip = if c == first_chunk { offset } else { 0 };
            self.chunk(c)
                .and_then(|chunk| chunk.get(skip..))
                .unwrap_or_default()
        })
    }

    /// The index of the first entry for which `before` is false, assuming `before` holds for a
    /// prefix of the entries and fails for the rest (like `slice::partition_point`).
    pub(crate) fn partition_point(&self, mut before: impl FnMut(&T) -> bool) -> usize {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            match self.get(mid) {
                Some(value) if before(value) => low = mid + 1,
                _ => high = mid,
            }
        }
        low
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(n: usize) -> ChunkedVec<usize> {
        let mut v = ChunkedVec::default();
        for i in 0..n {
            v.push(i);
        }
        v
    }

    #[test]
    fn a_stream_slot_stays_small() {
        assert_eq!(std::mem::size_of::<ChunkedVec<u64>>(), 32);
    }

    #[test]
    fn lengths_at_chunk_boundaries() {
        for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 1] {
            assert_eq!(filled(n).len(), n);
        }
    }

    #[test]
    fn indexes_across_chunk_boundaries() {
        let v = filled(3 * CHUNK + 5);
        assert_eq!(v.len(), 3 * CHUNK + 5);
        for i in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 4] {
            assert_eq!(v.get(i), Some(&i));
        }
        assert_eq!(v.get(3 * CHUNK + 5), None);
    }

    #[test]
    fn later_chunks_never_reallocate() {
        let mut v = filled(CHUNK + 1);
        let before = v.rest.as_ref().unwrap()[0].as_ptr();
        for i in 0..CHUNK - 1 {
            v.push(i);
        }
        assert_eq!(v.rest.as_ref().unwrap()[0].as_ptr(), before);
        assert_eq!(v.rest_len(), 1);
        v.push(0);
        assert_eq!(v.rest_len(), 2);
    }

    #[test]
    fn iterates_from_any_start() {
        let v = filled(2 * CHUNK + 3);
        for start in [
            0,
            7,
            CHUNK - 1,
            CHUNK,
            2 * CHUNK + 2,
            2 * CHUNK + 3,
            5 * CHUNK,
        ] {
            let got: Vec<usize> = v.iter_from(start).copied().collect();
            let want: Vec<usize> = (start..2 * CHUNK + 3).collect();
            assert_eq!(got, want, "start {start}");
        }
    }

    #[test]
    fn partition_point_finds_the_boundary() {
        let v = filled(CHUNK * 2 + 10);
        for boundary in [0, 1, CHUNK, CHUNK * 2 + 9, CHUNK * 2 + 10] {
            assert_eq!(v.partition_point(|&x| x < boundary), boundary);
        }
        assert_eq!(ChunkedVec::<usize>::default().partition_point(|_| true), 0);
    }
}
