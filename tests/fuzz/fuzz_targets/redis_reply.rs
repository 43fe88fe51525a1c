//! Every typed reader of the Redis store's replies on arbitrary RESP2 frames: none panics,
//! whatever a server (or something in its place) answers.
#![no_main]

use fikra_gateway::store::redis::decode_with_every_reader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let accepted = decode_with_every_reader(data);
    assert!(accepted <= 17);
});
