//! The upstream response-head reader on arbitrary bytes: it never panics, a head it accepts
//! ends within the bytes and parses the same from exactly them, and no strict prefix of it is
//! accepted (only `Ok(None)`, more bytes needed, or the same refusal).
#![no_main]

use fikra_gateway::backend::upstream::client::parse_response_head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((head, head_len))) = parse_response_head(data) else { return };
    assert!(head_len <= data.len());
    let (again, again_len) = parse_response_head(&data[..head_len]).expect("the same bytes").expect("complete");
    assert_eq!(again_len, head_len);
    assert_eq!((again.status, again.keep_alive, again.retry_after_s, again.event_stream), (head.status, head.keep_alive, head.retry_after_s, head.event_stream));
    if head_len > 1 {
        assert!(!matches!(parse_response_head(&data[..head_len - 1]), Ok(Some(_))), "accepted a strict prefix");
    }
});
