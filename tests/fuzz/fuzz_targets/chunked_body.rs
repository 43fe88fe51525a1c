//! The chunked-body decoder on arbitrary bytes, fed whole and in pieces: it never panics, and
//! however the bytes are split on arrival the decoded payload, the bytes consumed, completion
//! and the error are the same (the decoder is a state machine over bytes, not over reads).
#![no_main]

use fikra_gateway::http::chunked::ChunkedDecoder;
use libfuzzer_sys::fuzz_target;

/// A small body limit, so the fuzzer also reaches "too large".
const MAX_BODY_BYTES: usize = 4096;

/// Decodes `input` delivered in pieces ending at `cuts`, re-offering unconsumed bytes as a
/// connection loop does. Returns (payload, consumed, done, error).
fn decode_in_pieces(input: &[u8], cuts: &[usize]) -> (Vec<u8>, usize, bool, Option<String>) {
    let mut decoder = ChunkedDecoder::new(MAX_BODY_BYTES);
    let mut payload = Vec::new();
    let mut consumed = 0;
    let mut done = false;
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        let end = end.clamp(consumed, input.len());
        match decoder.decode(&input[consumed..end], &mut payload) {
            Ok(progress) => {
                assert!(progress.consumed <= end - consumed);
                consumed += progress.consumed;
                done = progress.done;
                if done {
                    break;
                }
            }
            Err(error) => return (payload, consumed, false, Some(format!("{error:?}"))),
        }
    }
    (payload, consumed, done, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else { return };
    let whole = decode_in_pieces(input, &[]);
    let step = usize::from(selector % 16) + 1;
    let cuts: Vec<usize> = (step..input.len()).step_by(step).collect();
    let pieces = decode_in_pieces(input, &cuts);
    assert_eq!(whole.3, pieces.3, "error");
    // After an error the bytes consumed depend on where the reads ended (an error reports none
    // of its own call's); without one they must agree.
    if whole.3.is_none() {
        assert_eq!(whole.1, pieces.1, "consumed");
        assert_eq!(whole.2, pieces.2, "done");
    }
    // The payload is the same when the body completed; after an error only a prefix matters.
    if whole.2 {
        assert_eq!(whole.0, pieces.0);
    }
    assert!(whole.0.len() <= MAX_BODY_BYTES && whole.0.len() <= input.len());
});
