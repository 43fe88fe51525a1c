//! Criterion benches for the relay's pure hot paths: finding SSE events and rewriting the model
//! of a chunk. (Placeholder body replaced by the benches work.)

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

use fikra_gateway::upstream::relay::{next_event_end, rewrite_event};

const CHUNK: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"openai/gpt-oss-20b\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" habari\"},\"finish_reason\":null}]}\n\n";

fn benches(c: &mut Criterion) {
    c.bench_function("sse_next_event_end", |b| b.iter(|| next_event_end(black_box(CHUNK))));
    let mut out = Vec::with_capacity(512);
    c.bench_function("sse_rewrite_event", |b| {
        b.iter(|| {
            out.clear();
            let mut usage = None;
            rewrite_event(black_box(CHUNK), "fikra-flash", false, &mut usage, &mut out)
        })
    });
}

criterion_group!(relay, benches);
criterion_main!(relay);
