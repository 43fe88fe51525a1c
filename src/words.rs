//! Searching a byte string eight bytes at a time: the loop every word-at-a-time search on the
//! data path shares (JSON strings, upstream header values), with the test of which bytes it
//! looks for left to the caller. It never allocates and never panics.

/// From `at`, skips the whole words in which `marks` flags no byte and returns the index of the
/// first flagged byte of the word that has one, or where fewer than eight bytes remain (the
/// caller looks at those one by one). `marks` reads a word little-endian and sets the high bit
/// of the bytes it looks for; its lowest set bit must be exact.
#[inline(always)]
pub fn skip_unmarked_words(bytes: &[u8], mut at: usize, marks: impl Fn(u64) -> u64) -> usize {
    while let Some(word) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let marked = marks(u64::from_le_bytes(*word));
        if marked != 0 {
            return at + (marked.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at
}
