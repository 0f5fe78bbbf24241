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
    rest: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        Self {
            first: Vec::new(),
            rest: Vec::new(),
            len: 0,
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
            rest: Vec::new(),
            len: 0,
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends one entry.
    pub(crate) fn push(&mut self, value: T) {
        if self.len < CHUNK {
            self.first.push(value);
        } else {
            match self.rest.last_mut() {
                Some(chunk) if chunk.len() < CHUNK => chunk.push(value),
                _ => {
                    let mut chunk = Vec::with_capacity(CHUNK);
                    chunk.push(value);
                    self.rest.push(chunk);
                }
            }
        }
        self.len += 1;
    }

    fn chunk(&self, index: usize) -> Option<&[T]> {
        match index {
            0 => Some(&self.first),
            n => self.rest.get(n - 1).map(Vec::as_slice),
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
        (first_chunk..=self.rest.len()).flat_map(move |c| {
            let skip = if c == first_chunk { offset } else { 0 };
            self.chunk(c)
                .and_then(|chunk| chunk.get(skip..))
                .unwrap_or_default()
        })
    }

    /// The index of the first entry for which `before` is false, assuming `before` holds for a
    /// prefix of the entries and fails for the rest (like `slice::partition_point`).
    pub(crate) fn partition_point(&self, mut before: impl FnMut(&T) -> bool) -> usize {
        let (mut low, mut high) = (0, self.len);
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
        let before = v.rest[0].as_ptr();
        for i in 0..CHUNK - 1 {
            v.push(i);
        }
        assert_eq!(v.rest[0].as_ptr(), before);
        assert_eq!(v.rest.len(), 1);
        v.push(0);
        assert_eq!(v.rest.len(), 2);
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
