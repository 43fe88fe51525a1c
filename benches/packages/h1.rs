//! monoio-http's h1 codec against the project's framing (`http::request`, `http::server`):
//! decoding one typical request (head and a 1 KiB Content-Length body), and the delay from an
//! SSE event being handed to the writer until its bytes reach the reading end of a socket pair.
//!
//! The decode contenders start from the same wire bytes copied into their own reused buffer
//! (the read a connection does). The project's side is one `parse_head` + `check_host` + the
//! body slice, which is what `serve_connection` does per request (it parses each head once and
//! keeps it as `HeadSpans` while the body is read). monoio-http's side
//! is its `RequestHeadDecoder` under `GenericHeadDecoder` (Transfer-Encoding / Content-Length)
//! and its `FixedBodyDecoder`: it builds an `http::HeaderMap` and splits `Bytes` off the buffer.
//! It checks less (no head or body cap, first Content-Length only, no smuggling defences).
//!
//! The SSE delay: one runtime, a Unix socket pair, events of the Groq stream handed to the
//! writer one per `SSE_PACE_MS`, a reader task on the other end noting when each event's
//! blank line arrives. The project's writer is the real `serve_connection` with a handler that
//! streams through `ResponseSink` (`start_stream`, `frame_event`, `flush`); monoio-http's is its
//! `GenericEncoder` sending a response whose body is a stream payload fed event by event. Its
//! `send` holds the encoder until the body ends, so nothing can flush it between events: a
//! streamed body goes out when 8 KiB have piled up, or at the end.

use std::cell::RefCell;
use std::hint::black_box;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{Criterion, Throughput};
use fikra_gateway::clock::monotonic_us;
use fikra_gateway::http::head_spans::HeadSpans;
use fikra_gateway::http::request::{BodyFraming, parse_head};
use fikra_gateway::http::server::{Handler, OutBufferPool, Request, ResponseSink, ServerLimits, serve_connection};
use fikra_gateway::limits::MAX_REQUEST_HEAD_BYTES;
use monoio::io::sink::Sink;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::UnixStream;
use monoio_codec::{Decoded, Decoder};
use monoio_http::common::request::{Request as HttpRequest, RequestHead as HttpRequestHead};
use monoio_http::common::response::{Response as HttpResponse, ResponseBuilder};
use monoio_http::h1::codec::decoder::{DirectWrapper, GenericHeadDecoder, PayloadDecoder, RequestHeadDecoder};
use monoio_http::h1::codec::encoder::GenericEncoder;
use monoio_http::h1::payload::{Payload, stream_payload_pair};

use crate::{inputs, report_allocations};

/// A chat request as the OpenAI Python SDK sends it, with a 1 KiB body.
fn request_wire() -> Vec<u8> {
    let body = inputs::chat_request(1024);
    let mut wire = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.fikraapi.co.ke\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nAccept: application/json\r\nContent-Type: application/json\r\nUser-Agent: OpenAI/Python 3.57.0\r\nX-Stainless-Lang: python\r\nX-Stainless-Package-Version: 3.57.0\r\nX-Stainless-OS: Linux\r\nX-Stainless-Arch: x64\r\nX-Stainless-Runtime: CPython\r\nX-Stainless-Runtime-Version: 3.12.3\r\nAuthorization: Bearer fk_live_0123456789abcdefghijABCDEFGHIJ01\r\nX-Stainless-Async: false\r\nX-Stainless-Retry-Count: 0\r\nX-Stainless-Read-Timeout: 600\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    wire.extend_from_slice(&body);
    wire
}

/// The project's framing on one request: the head parsed `parses` times (as the connection
/// loop does), the Host rule, the body sliced. Returns the Authorization and body lengths.
fn project_decode(buffer: &mut Vec<u8>, wire: &[u8]) -> Option<(usize, usize)> {
    buffer.clear();
    buffer.extend_from_slice(wire);
    let parsed = parse_head(buffer, MAX_REQUEST_HEAD_BYTES).ok()??;
    parsed.check_host().ok()?;
    // As served: the head kept as spans while the body is read, viewed again for the handler.
    let spans = HeadSpans::of(&parsed, buffer);
    let head = spans.view(buffer);
    let body = match head.framing {
        BodyFraming::ContentLength(length) => buffer.get(head.head_len..head.head_len + length as usize)?,
        BodyFraming::None | BodyFraming::Chunked => &[],
    };
    Some((head.authorization.map_or(0, <[u8]>::len), body.len()))
}

type MonoioHeadDecoder = GenericHeadDecoder<HttpRequest, RequestHeadDecoder, DirectWrapper>;

/// monoio-http's h1 decoders on one request: head, then the Content-Length body split off.
fn monoio_http_decode(buffer: &mut BytesMut, wire: &[u8]) -> Option<(usize, usize)> {
    buffer.clear();
    buffer.extend_from_slice(wire);
    let mut decoder = MonoioHeadDecoder::default();
    let Ok(Decoded::Some((head, payload))) = decoder.decode(buffer) else { return None };
    let head: HttpRequestHead = head;
    let authorization = head.headers.get("authorization").map_or(0, |value| value.len());
    let body_len = match payload {
        PayloadDecoder::Fixed(mut body) => match body.decode(buffer) {
            Ok(Decoded::Some(body)) => body.len(),
            _ => return None,
        },
        PayloadDecoder::None => 0,
        PayloadDecoder::Streamed(_) => return None,
    };
    Some((authorization, body_len))
}

pub fn benches(c: &mut Criterion) {
    let wire = request_wire();
    let (mut vec_buffer, mut bytes_buffer) = (Vec::with_capacity(8192), BytesMut::with_capacity(8192));
    let project = project_decode(&mut vec_buffer, &wire).expect("the project parses the request");
    let package = monoio_http_decode(&mut bytes_buffer, &wire).expect("monoio-http decodes the request");
    assert_eq!(project, package, "both read the same Authorization and body");
    println!("h1 request: {} bytes ({} of body)", wire.len(), project.1);

    let mut group = c.benchmark_group("h1_decode");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("project_parse_head_as_served", |b| {
        b.iter(|| project_decode(&mut vec_buffer, black_box(&wire)))
    });
    group.bench_function("monoio_http_codec", |b| b.iter(|| monoio_http_decode(&mut bytes_buffer, black_box(&wire))));
    group.finish();
    report_allocations("h1_decode/project_parse_head_as_served", || {
        black_box(project_decode(&mut vec_buffer, &wire));
    });
    report_allocations("h1_decode/monoio_http_codec", || {
        black_box(monoio_http_decode(&mut bytes_buffer, &wire));
    });
}

/// How often the benched upstream produces an event (a fast model's token pace).
const SSE_PACE_MS: u64 = 1;
/// Streams per contender in a full run (interleaved); a smoke run does one each.
const SSE_STREAMS_FULL: usize = 30;

/// When each event was handed to the writer, and when the reader saw its end
/// (`clock::monotonic_us`).
#[derive(Default)]
struct Timeline {
    handed_us: Vec<u64>,
    received_us: Vec<u64>,
}

/// Reads the stream until EOF, noting the arrival time of every event's blank line (`\n\n`
/// occurs once per event on the wire: heads and chunk framing use CRLF).
async fn read_events(mut stream: UnixStream, timeline: Rc<RefCell<Timeline>>) -> usize {
    // `from`: where the next blank line may start (a match may span two reads).
    let (mut seen, mut from, mut buffer) = (Vec::with_capacity(64 * 1024), 0usize, vec![0u8; 64 * 1024]);
    loop {
        let (result, returned) = stream.read(buffer).await;
        buffer = returned;
        let read = match result {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let now_us = monotonic_us();
        seen.extend_from_slice(&buffer[..read]);
        while let Some(at) = seen[from..].windows(2).position(|pair| pair == b"\n\n") {
            from += at + 2;
            timeline.borrow_mut().received_us.push(now_us);
        }
        from = from.max(seen.len().saturating_sub(1));
    }
    seen.len()
}

/// Streams `events` through the project's connection loop (one request, `connection: close`).
struct SseHandler {
    events: Rc<Vec<Vec<u8>>>,
    timeline: Rc<RefCell<Timeline>>,
    buffers: OutBufferPool,
}

impl Handler for SseHandler {
    async fn handle<S: AsyncWriteRent>(&self, _request: &Request<'_>, sink: &mut ResponseSink<S>) {
        let context = sink.bare_context();
        sink.start_stream(200, "text/event-stream", &[], &context);
        for event in self.events.iter() {
            monoio::time::sleep(Duration::from_millis(SSE_PACE_MS)).await;
            self.timeline.borrow_mut().handed_us.push(monotonic_us());
            let start = sink.out.len();
            sink.out.extend_from_slice(event);
            sink.frame_event(start);
            if sink.flush().await.is_err() {
                return;
            }
        }
        sink.end_stream();
    }

    fn out_buffers(&self) -> &OutBufferPool {
        &self.buffers
    }
}

async fn project_stream(events: Rc<Vec<Vec<u8>>>) -> Timeline {
    let (server, mut client) = UnixStream::pair().expect("a socket pair");
    let timeline = Rc::new(RefCell::new(Timeline::default()));
    let handler = SseHandler { events, timeline: timeline.clone(), buffers: OutBufferPool::default() };
    let serving = monoio::spawn(async move {
        serve_connection(server, None, &handler, ServerLimits::default()).await;
    });
    let request =
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}";
    let (written, _) = client.write_all(request.to_vec()).await;
    written.expect("the request is written");
    read_events(client, timeline.clone()).await;
    serving.await;
    Rc::try_unwrap(timeline).ok().expect("the stream is over").into_inner()
}

async fn monoio_http_stream(events: Rc<Vec<Vec<u8>>>) -> Timeline {
    let (server, client) = UnixStream::pair().expect("a socket pair");
    let timeline = Rc::new(RefCell::new(Timeline::default()));
    let (payload, mut sender) = stream_payload_pair();
    let feeder_timeline = timeline.clone();
    let feeder = monoio::spawn(async move {
        for event in events.iter() {
            monoio::time::sleep(Duration::from_millis(SSE_PACE_MS)).await;
            feeder_timeline.borrow_mut().handed_us.push(monotonic_us());
            sender.feed_data(Some(bytes::Bytes::copy_from_slice(event)));
        }
        sender.feed_data(None);
    });
    let writer = monoio::spawn(async move {
        let response: HttpResponse<Payload> = ResponseBuilder::new()
            .status(200)
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(Payload::Stream(payload))
            .expect("a response");
        let mut encoder = GenericEncoder::new(server);
        encoder.send(response).await.expect("the response is encoded");
        Sink::<HttpResponse<Payload>>::close(&mut encoder).await.expect("the stream closes");
    });
    read_events(client, timeline.clone()).await;
    feeder.await;
    writer.await;
    Rc::try_unwrap(timeline).ok().expect("the stream is over").into_inner()
}

/// The delays of every event of `timelines`, sorted, in microseconds.
fn delays_us(timelines: &[Timeline], events: usize) -> Vec<u64> {
    let mut delays = Vec::new();
    for timeline in timelines {
        assert_eq!(timeline.handed_us.len(), events, "every event was handed");
        assert_eq!(timeline.received_us.len(), events, "every event arrived");
        let pairs = timeline.handed_us.iter().zip(&timeline.received_us);
        delays.extend(pairs.map(|(handed_us, received_us)| received_us.saturating_sub(*handed_us)));
    }
    delays.sort_unstable();
    delays
}

fn summary(delays: &[u64]) -> String {
    let at = |fraction: f64| delays[((delays.len() - 1) as f64 * fraction) as usize];
    format!(
        "p50 {} µs, p90 {} µs, p99 {} µs, max {} µs ({} events)",
        at(0.5),
        at(0.9),
        at(0.99),
        delays[delays.len() - 1],
        delays.len()
    )
}

/// The SSE hand-off-to-socket delay of both writers, printed (not a criterion timing: the
/// figure is a delay distribution, not a cost per call).
pub fn sse_delay(_c: &mut Criterion) {
    let streams = if crate::full_run() { SSE_STREAMS_FULL } else { 1 };
    let events = Rc::new(inputs::sse_events());
    let count = events.len();
    let driver = if std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_some() { "epoll (forced)" } else { "fusion" };
    let mut runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build().expect("a runtime");
    let (project, package) = runtime.block_on(async {
        let (mut project, mut package) = (Vec::new(), Vec::new());
        for _ in 0..streams {
            project.push(project_stream(events.clone()).await);
            package.push(monoio_http_stream(events.clone()).await);
        }
        (project, package)
    });
    println!(
        "sse delay ({streams} streams of {count} events, one per {SSE_PACE_MS} ms, unix socket pair, {driver} driver):"
    );
    println!("sse delay: project ResponseSink: {}", summary(&delays_us(&project, count)));
    println!("sse delay: monoio-http GenericEncoder: {}", summary(&delays_us(&package, count)));
}
