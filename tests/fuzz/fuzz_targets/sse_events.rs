//! The SSE event scanner, fed in pieces as reads deliver them, against the plain whole-buffer
//! search: the same event boundaries, in the same order, however the bytes were split.
#![no_main]

use fikra_gateway::backend::upstream::rewrite::{EventFinder, next_event_end};
use libfuzzer_sys::fuzz_target;

/// Boundaries found by searching the whole buffer from the start after each event.
fn whole(buffer: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut start = 0;
    while let Some(end) = next_event_end(&buffer[start..]) {
        start += end;
        ends.push(start);
    }
    ends
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else { return };
    let step = usize::from(selector % 32) + 1;
    let mut finder = EventFinder::default();
    let mut ends = Vec::new();
    let (mut start, mut arrived) = (0, 0);
    while arrived < stream.len() {
        arrived = (arrived + step).min(stream.len());
        while let Some(end) = finder.next_end(&stream[start..arrived]) {
            start += end;
            ends.push(start);
        }
    }
    assert_eq!(ends, whole(stream));
});
