//! `bytes::Bytes`/`BytesMut` against the `Vec<u8>` hand-offs of the stream relay, where buffers
//! move between owners: the upstream's read buffer, the decoded payload the event finder reads,
//! and the output buffer moved into the client write and back.
//!
//! `relay/vec` is today's path (`client::Exchange::next_piece` and `stream::drive`): each read
//! appended to `raw`, the chunked coding decoded into `payload` (a copy) and the consumed input
//! drained (a move of the rest), events found and rewritten into `out`, `payload` drained, then
//! `out` moved into the write and taken back. `relay/bytes` keeps `raw` in a `BytesMut` and
//! decodes with monoio-http's `ChunkedBodyDecoder`, which splits each chunk off as `Bytes`
//! without copying; the events of a chunk are read where they lie, only a partial event is
//! copied into a pending `BytesMut`, and consumed bytes are `advance`d, not moved. The output
//! stays a `Vec` in both (the rewrite writes into one). monoio-http's decoder bounds nothing
//! (sizes, extensions, trailers), so `relay/bytes` does less checking than `relay/vec`.
//!
//! `out_handoff/*` isolates the output hand-off: a `Vec` moved into the write and taken back,
//! against `BytesMut::split().freeze()` handed over as `Bytes` (dropped when written, so the
//! next reserve reclaims the capacity).

use std::hint::black_box;

use bytes::{Buf, Bytes, BytesMut};
use criterion::{Criterion, Throughput};
use fikra_gateway::backend::upstream::rewrite::{
    EventFinder, EventKind, ModelNames, ReportedUsage, next_event_end, rewrite_event,
};
use fikra_gateway::http::chunked::ChunkedDecoder;
use fikra_gateway::http::response::frame_chunk_in_place;
use fikra_gateway::limits::UPSTREAM_MAX_RESPONSE_BODY_BYTES;
use monoio_codec::{Decoded, Decoder};
use monoio_http::h1::codec::decoder::ChunkedBodyDecoder;

use crate::inputs::{self, PUBLIC_MODEL, UPSTREAM_MODEL};
use crate::report_allocations;

const NAMES: ModelNames<'static> = ModelNames { public: PUBLIC_MODEL, upstream: UPSTREAM_MODEL };
/// How the upstream's stream arrives: reads of one Ethernet-MSS-sized piece each.
const PIECE_BYTES: usize = 1448;

/// What one relayed stream produced.
#[derive(Debug, Default, PartialEq, Eq)]
struct Relayed {
    delivered: usize,
    usage: Option<ReportedUsage>,
    written_bytes: usize,
}

/// Rewrites one complete event into `out` as one HTTP chunk.
fn take_event(event: &[u8], out: &mut Vec<u8>, relayed: &mut Relayed) {
    let start = out.len();
    if rewrite_event(event, &NAMES, false, &mut relayed.usage, out) == EventKind::Chunk {
        relayed.delivered += 1;
    }
    frame_chunk_in_place(out, start);
}

/// The flush: `out` moves into the write (here: its bytes counted) and comes back empty.
fn flush(out: &mut Vec<u8>, relayed: &mut Relayed) {
    if out.is_empty() {
        return;
    }
    let mut buffer = std::mem::take(out);
    relayed.written_bytes += black_box(&buffer).len();
    buffer.clear();
    *out = buffer;
}

#[derive(Default)]
struct VecRelay {
    raw: Vec<u8>,
    payload: Vec<u8>,
    out: Vec<u8>,
}

fn relay_vec(relay: &mut VecRelay, wire: &[u8]) -> Relayed {
    relay.raw.clear();
    relay.payload.clear();
    let mut decoder = ChunkedDecoder::new(UPSTREAM_MAX_RESPONSE_BODY_BYTES);
    let mut finder = EventFinder::default();
    let mut relayed = Relayed::default();
    for piece in wire.chunks(PIECE_BYTES) {
        relay.raw.extend_from_slice(piece);
        let Ok(progress) = decoder.decode(&relay.raw, &mut relay.payload) else { break };
        relay.raw.drain(..progress.consumed);
        let mut consumed = 0;
        while let Some(len) = finder.next_end(&relay.payload[consumed..]) {
            take_event(&relay.payload[consumed..consumed + len], &mut relay.out, &mut relayed);
            consumed += len;
        }
        relay.payload.drain(..consumed);
        flush(&mut relay.out, &mut relayed);
    }
    relayed
}

#[derive(Default)]
struct BytesRelay {
    raw: BytesMut,
    pending: BytesMut,
    out: Vec<u8>,
}

/// One decoded chunk: read in place when no partial event is pending, else appended to it.
fn take_chunk(
    chunk: Bytes,
    pending: &mut BytesMut,
    finder: &mut EventFinder,
    out: &mut Vec<u8>,
    relayed: &mut Relayed,
) {
    if pending.is_empty() {
        let mut rest: &[u8] = &chunk;
        while let Some(end) = next_event_end(rest) {
            take_event(&rest[..end], out, relayed);
            rest = &rest[end..];
        }
        pending.extend_from_slice(rest);
        return;
    }
    pending.extend_from_slice(&chunk);
    let mut consumed = 0;
    while let Some(len) = finder.next_end(&pending[consumed..]) {
        take_event(&pending[consumed..consumed + len], out, relayed);
        consumed += len;
    }
    pending.advance(consumed);
}

fn relay_bytes(relay: &mut BytesRelay, wire: &[u8]) -> Relayed {
    relay.raw.clear();
    relay.pending.clear();
    let mut decoder = ChunkedBodyDecoder::default();
    let mut finder = EventFinder::default();
    let mut relayed = Relayed::default();
    for piece in wire.chunks(PIECE_BYTES) {
        relay.raw.extend_from_slice(piece);
        while let Ok(Decoded::Some(Some(chunk))) = decoder.decode(&mut relay.raw) {
            take_chunk(chunk, &mut relay.pending, &mut finder, &mut relay.out, &mut relayed);
        }
        flush(&mut relay.out, &mut relayed);
    }
    relayed
}

/// Each event appended to `out` and handed to the write as the relay does (`Vec` moved).
fn out_handoff_vec(out: &mut Vec<u8>, events: &[Vec<u8>]) -> usize {
    let mut written = 0;
    for event in events {
        out.extend_from_slice(event);
        let mut buffer = std::mem::take(out);
        written += black_box(&buffer).len();
        buffer.clear();
        *out = buffer;
    }
    written
}

/// The same with a `BytesMut` whose filled part is frozen and handed over as `Bytes`.
fn out_handoff_bytes(out: &mut BytesMut, events: &[Vec<u8>]) -> usize {
    let mut written = 0;
    for event in events {
        out.extend_from_slice(event);
        let frozen: Bytes = out.split().freeze();
        written += black_box(&frozen).len();
    }
    written
}

pub fn benches(c: &mut Criterion) {
    let wire = inputs::chunked_stream();
    let (mut vec_relay, mut bytes_relay) = (VecRelay::default(), BytesRelay::default());
    let by_vec = relay_vec(&mut vec_relay, &wire);
    let by_bytes = relay_bytes(&mut bytes_relay, &wire);
    assert_eq!(by_vec, by_bytes, "both relays write the same stream");
    assert_eq!(by_vec.delivered, inputs::STREAM_CONTENT_CHUNKS + 2, "role, content and finish chunks");
    assert_eq!(by_vec.usage, Some(ReportedUsage::new(inputs::PROMPT_TOKENS, inputs::STREAM_CONTENT_CHUNKS as u64)));
    println!("relay stream: {} bytes on the wire, {PIECE_BYTES}-byte reads", wire.len());

    let mut group = c.benchmark_group("relay");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("vec", |b| b.iter(|| relay_vec(&mut vec_relay, black_box(&wire)).written_bytes));
    group.bench_function("bytes", |b| b.iter(|| relay_bytes(&mut bytes_relay, black_box(&wire)).written_bytes));
    group.finish();
    report_allocations("relay/vec", || {
        black_box(relay_vec(&mut vec_relay, &wire));
    });
    report_allocations("relay/bytes", || {
        black_box(relay_bytes(&mut bytes_relay, &wire));
    });

    let events = inputs::sse_events();
    let (mut vec_out, mut bytes_out) = (Vec::with_capacity(16 * 1024), BytesMut::with_capacity(16 * 1024));
    assert_eq!(out_handoff_vec(&mut vec_out, &events), out_handoff_bytes(&mut bytes_out, &events));
    let mut group = c.benchmark_group("out_handoff");
    group.bench_function("vec_moved", |b| b.iter(|| out_handoff_vec(&mut vec_out, black_box(&events))));
    group.bench_function("bytes_frozen", |b| b.iter(|| out_handoff_bytes(&mut bytes_out, black_box(&events))));
    group.finish();
    report_allocations("out_handoff/vec_moved", || {
        black_box(out_handoff_vec(&mut vec_out, &events));
    });
    report_allocations("out_handoff/bytes_frozen", || {
        black_box(out_handoff_bytes(&mut bytes_out, &events));
    });
}
