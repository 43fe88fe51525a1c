//! Reader tests: whole replies of every kind read exactly, a reply cut anywhere is "not yet",
//! bytes that are not RESP2 are errors, nesting is bounded.

use super::*;

fn bulk(text: &str) -> Reply {
    Reply::BulkString(text.as_bytes().to_vec())
}

/// One reply of every kind, nested: what an `FCALL` or an `XREVRANGE` can answer.
fn nested() -> Reply {
    Reply::Array(vec![
        Reply::Integer(1),
        Reply::Integer(-42),
        bulk("fk:{acct_1}:acct"),
        Reply::Null,
        Reply::Array(vec![]),
        Reply::Array(vec![
            bulk("id"),
            Reply::Array(vec![bulk("cost"), bulk("120"), Reply::SimpleString(b"OK".to_vec())]),
        ]),
        Reply::Error("ERR inside".into()),
        bulk(""),
        bulk("with\r\ninside"),
    ])
}

fn wire(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    reply.encode(&mut out);
    out
}

/// The reply at the start of `bytes`, read as the client does: measured, then viewed.
fn read(bytes: &[u8]) -> Result<Option<Reply>, ProtocolError> {
    Ok(reply_len(bytes)?.map(|len| Frame::of_reply(&bytes[..len]).expect("a measured reply").to_reply()))
}

// Goal: a whole reply of each kind reads back exactly, and its length is its bytes' (a reply
// followed by the next one's bytes is measured alone).
#[test]
fn whole_replies_read_exactly() {
    let cases: [(&[u8], Reply); 9] = [
        (b"+OK\r\n", Reply::SimpleString(b"OK".to_vec())),
        (b"-ERR unknown command 'FOO'\r\n", Reply::Error("ERR unknown command 'FOO'".into())),
        (b":0\r\n", Reply::Integer(0)),
        (b":-9223372036854775808\r\n", Reply::Integer(i64::MIN)),
        (b":9223372036854775807\r\n", Reply::Integer(i64::MAX)),
        (b"$5\r\nhello\r\n", bulk("hello")),
        (b"$0\r\n\r\n", bulk("")),
        (b"*2\r\n:1\r\n$1\r\nx\r\n", Reply::Array(vec![Reply::Integer(1), bulk("x")])),
        (b"*0\r\n", Reply::Array(vec![])),
    ];
    for (bytes, expected) in cases {
        assert_eq!(reply_len(bytes), Ok(Some(bytes.len())), "{bytes:?}");
        assert_eq!(read(bytes), Ok(Some(expected.clone())), "{bytes:?}");
        let mut two = bytes.to_vec();
        two.extend_from_slice(b":7\r\n");
        assert_eq!(reply_len(&two), Ok(Some(bytes.len())), "{bytes:?} then more");
        assert_eq!(wire(&expected), bytes, "{expected:?} encodes as a server sends it");
    }
}

// Goal: both nulls (`$-1`, `*-1`) read as `Null`; `Null` encodes as `$-1`.
#[test]
fn nulls_read_as_null() {
    assert_eq!(read(b"$-1\r\n"), Ok(Some(Reply::Null)));
    assert_eq!(read(b"*-1\r\n"), Ok(Some(Reply::Null)));
    assert_eq!(Frame::of_reply(b"$-1\r\n"), Some(Frame::Null));
    assert_eq!(wire(&Reply::Null), b"$-1\r\n");
    let items = Frame::of_reply(b"*2\r\n$-1\r\n*-1\r\n");
    let Some(Frame::Array(items)) = items else { panic!("{items:?}") };
    assert_eq!(items.iter().collect::<Vec<_>>(), [Frame::Null, Frame::Null]);
}

// Goal: a nested reply reads item by item, by index or in order, nested arrays in place, and
// the same as its owned tree.
#[test]
fn nested_replies_read_item_by_item() {
    let bytes = wire(&nested());
    assert_eq!(read(&bytes), Ok(Some(nested())));
    let Some(Frame::Array(items)) = Frame::of_reply(&bytes) else { panic!("an array") };
    assert_eq!(items.len(), 9);
    assert_eq!(items.get(0), Some(Frame::Integer(1)));
    assert_eq!(items.get(1), Some(Frame::Integer(-42)));
    assert_eq!(items.get(2), Some(Frame::BulkString(b"fk:{acct_1}:acct")));
    assert_eq!(items.get(3), Some(Frame::Null));
    assert!(matches!(items.get(4), Some(Frame::Array(empty)) if empty.is_empty()));
    let Some(Frame::Array(entry)) = items.get(5) else { panic!("a nested array") };
    let Some(Frame::Array(fields)) = entry.get(1) else { panic!("a nested array") };
    assert_eq!(
        fields.iter().collect::<Vec<_>>(),
        [Frame::BulkString(b"cost"), Frame::BulkString(b"120"), Frame::SimpleString(b"OK")]
    );
    assert_eq!(items.get(6), Some(Frame::Error(b"ERR inside")));
    assert_eq!(items.get(7), Some(Frame::BulkString(b"")));
    assert_eq!(items.get(8), Some(Frame::BulkString(b"with\r\ninside")));
    assert_eq!(items.get(9), None);
    assert_eq!(items.iter().count(), 9);
}

// Goal: a reply cut at any byte is "not all there yet" (never an error, never a shorter reply),
// and whole once its last byte comes, as replies arrive across reads.
#[test]
fn a_reply_cut_anywhere_is_not_yet_whole() {
    for reply in [nested(), bulk("hello"), Reply::Integer(-12), Reply::Error("MOVED 3999 127.0.0.1:7001".into())] {
        let bytes = wire(&reply);
        for cut in 0..bytes.len() {
            assert_eq!(reply_len(&bytes[..cut]), Ok(None), "{reply:?} cut at {cut}");
            assert_eq!(Frame::of_reply(&bytes[..cut]), None, "{reply:?} cut at {cut}");
        }
        assert_eq!(reply_len(&bytes), Ok(Some(bytes.len())));
    }
    for cut in 0..5 {
        assert_eq!(reply_len(&b"$-1\r\n"[..cut]), Ok(None));
    }
}

// Goal: bytes that are not RESP2 are a protocol error, wherever they sit (in the first line, a
// bulk string's end, an item deep down), and so is a number that does not fit.
#[test]
fn bytes_that_are_not_resp2_are_errors() {
    let broken: [&[u8]; 14] = [
        b"?what\r\n",
        b"+OK\rX",
        b":12a\r\n",
        b":\r\n",
        b":-\r\n",
        b":+1\r\n",
        b":99999999999999999999\r\n",
        b"$-2\r\n",
        b"$x\r\n",
        b"$3\r\nabcd\r\n",
        b"$3\r\nabc\n\r",
        b"*2\r\n:1\r\n!2\r\n",
        b"*1\r\n*1\r\n$1\r\nabc",
        b"_\r\n",
    ];
    for bytes in broken {
        assert_eq!(reply_len(bytes), Err(ProtocolError), "{bytes:?}");
        assert_eq!(Frame::of_reply(bytes), None, "{bytes:?}");
    }
    // Whole, then junk: the reply is whole (the junk is the next one's problem).
    assert_eq!(reply_len(b":1\r\n?"), Ok(Some(4)));
    assert_eq!(Frame::of_reply(b":1\r\n?"), None, "exactly one value");
}

// Goal: nesting up to `REDIS_MAX_REPLY_DEPTH` reads; one deeper is an error, found without
// recursion (a long run of `*1` cannot overflow the stack).
#[test]
fn nesting_is_bounded() {
    let nest = |depth: usize| {
        let mut bytes = b"*1\r\n".repeat(depth);
        bytes.extend_from_slice(b":5\r\n");
        bytes
    };
    let deepest = nest(REDIS_MAX_REPLY_DEPTH);
    assert_eq!(reply_len(&deepest), Ok(Some(deepest.len())));
    let mut frame = Frame::of_reply(&deepest).unwrap();
    for _ in 0..REDIS_MAX_REPLY_DEPTH {
        let Frame::Array(items) = frame else { panic!("{frame:?}") };
        frame = items.get(0).unwrap();
    }
    assert_eq!(frame, Frame::Integer(5));
    assert_eq!(reply_len(&nest(REDIS_MAX_REPLY_DEPTH + 1)), Err(ProtocolError));
    assert_eq!(reply_len(&b"*1\r\n".repeat(1_000_000)), Err(ProtocolError));
    // Many items at one depth are no nesting.
    let mut wide = b"*100000\r\n".to_vec();
    wide.extend_from_slice(&b"*0\r\n".repeat(100_000));
    assert_eq!(reply_len(&wide), Ok(Some(wide.len())));
}

// Goal: a measured reply reads the same without being walked again, and an index of an array
// gives every item by position, past the ones it holds on the stack too, and none past the end.
#[test]
fn measured_replies_and_indexed_items_read_the_same() {
    let bytes = wire(&nested());
    assert_eq!(Frame::of_measured(&bytes), Frame::of_reply(&bytes));
    assert_eq!(Frame::of_measured(b":7\r\n"), Some(Frame::Integer(7)));
    let long = Reply::Array((0..40).map(Reply::Integer).collect());
    let bytes = wire(&long);
    let Some(Frame::Array(items)) = Frame::of_measured(&bytes) else { panic!("an array") };
    let indexed = items.indexed();
    assert_eq!(indexed.len(), 40);
    for at in 0..40 {
        assert_eq!(indexed.get(at), Some(Frame::Integer(at as i64)), "item {at}");
    }
    assert_eq!(indexed.get(40), None);
    let short = wire(&Reply::Array(vec![Reply::Integer(1), Reply::Null]));
    let Some(Frame::Array(items)) = Frame::of_measured(&short) else { panic!("an array") };
    let indexed = items.indexed();
    assert_eq!(
        (indexed.get(0), indexed.get(1), indexed.get(2), indexed.get(20)),
        (Some(Frame::Integer(1)), Some(Frame::Null), None, None)
    );
    // Bytes that are not what was measured read as fewer items, never as a panic.
    let Some(Frame::Array(cut)) = Frame::of_measured(b"*3\r\n:1\r\n") else { panic!("an array") };
    assert_eq!(cut.iter().collect::<Vec<_>>(), [Frame::Integer(1)]);
    assert_eq!(cut.indexed().get(1), None);
}

// Goal: integers of every length read exactly, signs included; nothing past 19 digits or the
// range of an i64 is read as a number.
#[test]
fn integers_of_every_length_read_exactly() {
    let mut values: Vec<i64> = vec![0, 7, -1, i64::MAX, i64::MIN, 12_345_678, 123_456_789, -99_999_999];
    let mut power: i64 = 1;
    for _ in 0..18 {
        power *= 10;
        values.extend([power - 1, power, power + 1, -(power - 1), power / 3 * 2 + 7]);
    }
    for value in values {
        let line = format!(":{value}\r\n");
        assert_eq!(Frame::of_reply(line.as_bytes()), Some(Frame::Integer(value)), "{line:?}");
        assert_eq!(reply_len(line.as_bytes()), Ok(Some(line.len())), "{line:?}");
    }
    assert_eq!(reply_len(b":12345678a\r\n"), Err(ProtocolError));
    assert_eq!(reply_len(b":9223372036854775808\r\n"), Err(ProtocolError), "above i64::MAX");
    assert_eq!(reply_len(b":12345678901234567890\r\n"), Err(ProtocolError), "twenty digits");
    assert_eq!(reply_len(b":123456789012"), Ok(None), "not all there yet");
}
