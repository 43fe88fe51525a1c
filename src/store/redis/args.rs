//! Function arguments written on the stack for the per-request calls (`fk_hold`, `fk_charge`):
//! numbers packed as the functions unpack them (`struct.unpack('<d...')`: no number parsing in
//! Lua), and the rate numbers derived from a bucket level the way `fikra.lua` derives them.
//! (Texts made of parts are written into the command itself: `redis::Fcall`.)
//!
//! Owns those encodings only. It never allocates, never sends anything and never decides what
//! goes into an argument (the callers in `admission` do).

use crate::ratelimit::UNITS_PER_TOKEN;

/// 1/60000 token: the unit of a bucket's level in the functions' replies.
pub(super) const UNITS: u64 = UNITS_PER_TOKEN as u64;

/// `values` as little-endian IEEE doubles, `BYTES` = 8 per value (checked in debug builds).
/// Integers below 2^53 are exact; every value the callers pack is below that.
pub(super) fn doubles<const BYTES: usize>(values: &[f64]) -> [u8; BYTES] {
    debug_assert_eq!(values.len() * 8, BYTES, "8 bytes per number");
    let mut out = [0u8; BYTES];
    for (slot, value) in out.chunks_exact_mut(8).zip(values) {
        slot.copy_from_slice(&value.to_le_bytes());
    }
    out
}

/// Milliseconds until a bucket of `capacity` per minute at `level` (1/60000 token) is full,
/// rounded up; 0 for a bucket of no capacity (the functions' `reset_ms`).
pub(super) fn reset_ms(capacity: u64, level: u64) -> u64 {
    if capacity == 0 {
        return 0;
    }
    capacity.saturating_mul(UNITS).saturating_sub(level).div_ceil(capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the packed numbers read back exactly, in order, as struct.unpack('<dd') reads them.
    #[test]
    fn doubles_are_little_endian_and_exact() {
        let packed = doubles::<16>(&[9_007_199_254_740_991.0, -1.0]);
        assert_eq!(f64::from_le_bytes(packed[..8].try_into().unwrap()) as u64, (1 << 53) - 1);
        assert_eq!(&packed[8..], &(-1.0f64).to_le_bytes());
    }

    // Goal: the reset time is rounded up, 0 when full or of no capacity.
    #[test]
    fn reset_times_round_up() {
        assert_eq!(reset_ms(30, 30 * UNITS), 0);
        assert_eq!(reset_ms(30, 30 * UNITS - 1), 1);
        assert_eq!(reset_ms(30, 29 * UNITS), 2000);
        assert_eq!(reset_ms(0, 0), 0);
    }
}
