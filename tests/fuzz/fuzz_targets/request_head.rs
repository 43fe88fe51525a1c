//! The request-head parser on arbitrary bytes: it never panics, a head it accepts is
//! self-consistent, parses the same from exactly its own bytes, and is never accepted from a
//! strict prefix of them (a head is complete only at its blank line).
#![no_main]

use fikra_gateway::http::request::parse_head;
use fikra_gateway::limits::MAX_REQUEST_HEAD_BYTES;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(head)) = parse_head(data, MAX_REQUEST_HEAD_BYTES) else { return };
    assert!(head.head_len <= data.len());
    assert!(head.path.starts_with('/'), "{:?}", head.path);
    assert!(head.minor_version <= 1);
    let own = &data[..head.head_len];
    assert!(own.ends_with(b"\n"), "a head ends with its blank line");
    let again = parse_head(own, MAX_REQUEST_HEAD_BYTES).expect("the same bytes parse again").expect("complete");
    assert_eq!(again, head);
    for cut in [head.head_len - 1, head.head_len / 2] {
        if let Ok(Some(early)) = parse_head(&own[..cut], MAX_REQUEST_HEAD_BYTES) {
            panic!("a head accepted from {cut} of its {} bytes: {early:?}", head.head_len);
        }
    }
});
