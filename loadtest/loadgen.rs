//! `fikra-loadgen`: the project's own load generator for LLM-style HTTP traffic.
//!
//! Closed loop (each connection sends its next request when the last answer is complete) or
//! open loop at a fixed total rate: every request has a scheduled send time and its latency is
//! measured from that time, not from when it was actually sent, so a stalled server cannot hide
//! its queueing delay (coordinated omission). For SSE answers it also records the time to the
//! first token (the first non-empty `content` delta) and the delay between events; when the
//! upstream is the sandbox with `--stamp-events on`, also the time to first token less the
//! sandbox's own wait for it (`first_event_outside_upstream`: the request's way there and the
//! event's way back, free of the sandbox's 1 ms timer rounding). Latencies go into HDR
//! histograms (one per connection thread, merged at the end); the result is printed as one JSON
//! object.
//!
//! Connections are monoio tasks spread over `--threads` OS threads (default 2), so a few cores
//! drive many connections the way wrk's event loops do.
//!
//! `--requests N` sends exactly N requests in total (split evenly over the connections, no
//! warm-up, no time limit) instead of running for a duration: for counting per-request costs
//! (Redis commands, instructions under callgrind). The JSON also carries the latency percentile
//! curve (`latency_curve`: `[quantile, µs]` pairs out to 99.999 %) for plotting, and the five
//! 100 ms slices of the run whose requests waited longest (`worst_slots`: `[start ms, max µs]`),
//! which tell one stall from slowness spread over the whole run.
//!
//! Usage: fikra-loadgen --url http://127.0.0.1:8080/v1/chat/completions [--connections 64]
//!        [--threads 2] [--duration-s 10] [--warmup-s 2] [--rate 0] [--requests 0] [--body FILE]
//!        [--header "name: value"]...

// A load generator measures real time on purpose, and resolves its one target while parsing its
// arguments, before any connection runs: the gateway's clock and DNS policy (clippy.toml) is not
// for this tool.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

/// Microsecond histograms up to one minute, three significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

const DEFAULT_BODY: &str =
    r#"{"model":"fikra-flash","max_tokens":16,"messages":[{"role":"user","content":"Habari ya asubuhi?"}]}"#;

#[derive(Clone)]
struct Options {
    /// OS threads, each running one monoio runtime with its share of the connections.
    threads: usize,
    addr: SocketAddr,
    host: String,
    path: String,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    /// Requests per second in total; 0 = closed loop.
    rate: f64,
    /// Requests in total, then stop; 0 = run for `duration` instead.
    requests: u64,
    body: Vec<u8>,
    headers: Vec<String>,
}

fn parse_options() -> Result<Options, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut url = None;
    let (mut connections, mut duration_s, mut warmup_s, mut rate, mut threads) = (64usize, 10f64, 2f64, 0f64, 2usize);
    let mut requests = 0u64;
    let mut body = DEFAULT_BODY.as_bytes().to_vec();
    let mut headers = Vec::new();
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<f64>().map_err(|_| format!("{flag}: not a number"));
        match flag.as_str() {
            "--url" => url = Some(value.clone()),
            "--connections" => connections = number(value)? as usize,
            "--duration-s" => duration_s = number(value)?,
            "--warmup-s" => warmup_s = number(value)?,
            "--rate" => rate = number(value)?,
            "--requests" => requests = number(value)? as u64,
            "--threads" => threads = (number(value)? as usize).max(1),
            "--body" => body = std::fs::read(value).map_err(|e| format!("{value}: {e}"))?,
            "--header" => headers.push(value.clone()),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let addr = authority.to_socket_addrs().map_err(|e| e.to_string())?.next().ok_or("unresolvable host")?;
    if connections == 0 {
        return Err("--connections must be positive".into());
    }
    Ok(Options {
        threads: threads.min(connections),
        addr,
        host: authority.to_string(),
        path,
        connections,
        // A fixed request count runs to its end: no warm-up, no time limit (one day).
        duration: Duration::from_secs_f64(if requests > 0 { 86_400.0 } else { duration_s }),
        warmup: Duration::from_secs_f64(if requests > 0 { 0.0 } else { warmup_s }),
        rate,
        requests,
        body,
        headers,
    })
}

/// What one connection thread measured.
struct Measured {
    latency: Histogram<u64>,
    first_event: Histogram<u64>,
    /// The time to first token less the upstream's own wait for it (stamped events only).
    first_event_outside_upstream: Histogram<u64>,
    between_events: Histogram<u64>,
    responses: u64,
    /// The longest latency of the requests scheduled in each `SLOT_MS` slice of the measured
    /// time, µs: when in the run the slow ones were (a stall shows as a few slices).
    slot_max_us: Vec<u64>,
    non_2xx: u64,
    errors: u64,
}

/// Reads more bytes from `stream` onto the end of `buffer`; 0 means the server closed.
async fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
    buffer.reserve(16 * 1024);
    let start = buffer.len();
    let owned = std::mem::take(buffer);
    let end = owned.capacity();
    let (result, slice) = stream.read(owned.slice_mut(start..end)).await;
    *buffer = slice.into_inner();
    result
}

/// Reads one HTTP response from `stream`, calling `on_body_bytes` as body bytes arrive.
/// Returns the status. `buffer` is reused and keeps bytes read past this response.
async fn read_response(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    mut on_body_bytes: impl FnMut(&[u8]),
) -> std::io::Result<u16> {
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let (status, head_len, length, chunked) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head_len) =
            response.parse(buffer).map_err(|_| invalid("bad response head"))?
        {
            let mut length = None;
            let mut chunked = false;
            for header in response.headers.iter() {
                if header.name.eq_ignore_ascii_case("content-length") {
                    length = std::str::from_utf8(header.value).ok().and_then(|v| v.trim().parse::<usize>().ok());
                } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = header.value.eq_ignore_ascii_case(b"chunked");
                }
            }
            break (response.code.unwrap_or(0), head_len, length, chunked);
        }
        if fill(stream, buffer).await? == 0 {
            return Err(invalid("closed before the response head"));
        }
    };
    buffer.drain(..head_len);
    if chunked {
        // Minimal chunked reader: size line, data, CRLF, until the zero-size chunk.
        loop {
            let line_end = loop {
                if let Some(position) = buffer.windows(2).position(|w| w == b"\r\n") {
                    break position;
                }
                if fill(stream, buffer).await? == 0 {
                    return Err(invalid("closed inside a chunked body"));
                }
            };
            let size_text = std::str::from_utf8(&buffer[..line_end]).map_err(|_| invalid("bad chunk size"))?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| invalid("bad chunk size"))?;
            while buffer.len() < line_end + 2 + size + 2 {
                if fill(stream, buffer).await? == 0 {
                    return Err(invalid("closed inside a chunk"));
                }
            }
            on_body_bytes(&buffer[line_end + 2..line_end + 2 + size]);
            buffer.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return Ok(status);
            }
        }
    }
    let length = length.unwrap_or(0);
    while buffer.len() < length {
        if fill(stream, buffer).await? == 0 {
            return Err(invalid("closed inside the body"));
        }
    }
    on_body_bytes(&buffer[..length]);
    buffer.drain(..length);
    Ok(status)
}

async fn run_connection(
    options: &Options,
    request: &[u8],
    index: usize,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) -> Measured {
    let mut measured = Measured {
        latency: histogram(),
        first_event: histogram(),
        first_event_outside_upstream: histogram(),
        between_events: histogram(),
        responses: 0,
        non_2xx: 0,
        errors: 0,
        slot_max_us: Vec::new(),
    };
    // Open loop: this connection's share of the rate, its sends staggered among the others.
    let interval = (options.rate > 0.0).then(|| Duration::from_secs_f64(options.connections as f64 / options.rate));
    let mut next_send =
        start + interval.map_or(Duration::ZERO, |i| i.mul_f64(index as f64 / options.connections as f64));
    let mut stream: Option<TcpStream> = None;
    let mut buffer = Vec::with_capacity(32 * 1024);
    let mut outgoing = request.to_vec();
    // This connection's share of `--requests` (unlimited when running for a duration).
    let share = match options.requests {
        0 => u64::MAX,
        total => total / options.connections as u64 + u64::from((index as u64) < total % options.connections as u64),
    };
    let mut sent = 0u64;
    while Instant::now() < end && sent < share {
        sent += 1;
        // Open loop: wait for this request's slot. When the previous answer made the send late,
        // latency counts from the slot (coordinated omission). When the connection was idle at
        // its slot, it counts from the actual send: monoio's timer wheel has a 1 ms resolution
        // and rounds up, so the wake-up's own lateness (up to 1 ms) is the generator's, not the
        // server's.
        let scheduled = match interval {
            Some(interval) => {
                let now = Instant::now();
                let slot = next_send;
                next_send += interval;
                if slot > now {
                    monoio::time::sleep(slot - now).await;
                    Instant::now()
                } else {
                    slot
                }
            }
            None => Instant::now(),
        };
        if stream.is_none() {
            match TcpStream::connect_addr(options.addr).await {
                Ok(connection) => {
                    let _ = connection.set_nodelay(true);
                    buffer.clear();
                    stream = Some(connection);
                }
                Err(_) => {
                    measured.errors += 1;
                    monoio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let connection = stream.as_mut().expect("connected above");
        let mut first_event_at: Option<Instant> = None;
        let mut upstream_wait_us: Option<u64> = None;
        let mut last_event_at: Option<Instant> = None;
        let mut between = Vec::new();
        let (written, returned) = connection.write_all(std::mem::take(&mut outgoing)).await;
        outgoing = returned;
        let result = match written {
            Err(error) => Err(error),
            Ok(_) => {
                read_response(connection, &mut buffer, |bytes| {
                    if bytes.windows(6).any(|w| w == b"data: ") {
                        let now = Instant::now();
                        if first_event_at.is_none() && carries_content(bytes) {
                            first_event_at = Some(now);
                            upstream_wait_us = stamped_upstream_wait_us(bytes);
                        }
                        if let Some(last) = last_event_at {
                            between.push(now - last);
                        }
                        last_event_at = Some(now);
                    }
                })
                .await
            }
        };
        let done = Instant::now();
        match result {
            Ok(status) => {
                if scheduled >= measure_from {
                    measured.responses += 1;
                    if !(200..300).contains(&status) {
                        measured.non_2xx += 1;
                    }
                    let latency_us = (done - scheduled).as_micros().max(1) as u64;
                    let _ = measured.latency.record(latency_us);
                    let slot = ((scheduled - measure_from).as_millis() / SLOT_MS) as usize;
                    if measured.slot_max_us.len() <= slot {
                        measured.slot_max_us.resize(slot + 1, 0);
                    }
                    measured.slot_max_us[slot] = measured.slot_max_us[slot].max(latency_us);
                    if let Some(first) = first_event_at {
                        let first_us = (first - scheduled).as_micros() as u64;
                        let _ = measured.first_event.record(first_us.max(1));
                        if let Some(wait_us) = upstream_wait_us {
                            let outside_us = first_us.saturating_sub(wait_us).max(1);
                            let _ = measured.first_event_outside_upstream.record(outside_us);
                        }
                    }
                    for gap in between {
                        let _ = measured.between_events.record(gap.as_micros().max(1) as u64);
                    }
                }
            }
            Err(_) => {
                measured.errors += 1;
                stream = None;
            }
        }
    }
    measured
}

/// Whether an SSE piece carries generated text (a non-empty `content` delta), so the role-only
/// first chunk does not count as the first token.
fn carries_content(bytes: &[u8]) -> bool {
    const KEY: &[u8] = b"\"content\":\"";
    bytes.windows(KEY.len() + 1).any(|w| w.starts_with(KEY) && w[KEY.len()] != b'"')
}

/// The sandbox's own wait before the first stamped event (`fikra-gateway sandbox --stamp-events
/// on` writes `"x_sandbox_us":[received, sent]` into each content chunk): sent - received, µs.
/// Both stamps are the sandbox's wall clock; the difference is only compared with this
/// process's monotonic readings, so the two clocks never need to agree on the time.
fn stamped_upstream_wait_us(bytes: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"x_sandbox_us\":[";
    let at = bytes.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = std::str::from_utf8(&bytes[at..]).ok()?;
    let (received, rest) = rest.split_once(',')?;
    let sent = rest.split(']').next()?;
    sent.trim().parse::<u64>().ok()?.checked_sub(received.trim().parse::<u64>().ok()?)
}

/// The slice of measured time `slot_max_us` keeps one maximum for, ms.
const SLOT_MS: u128 = 100;

/// The five slices with the longest latencies, slowest first: `[[start ms into the measured
/// time, max µs], ...]`.
fn worst_slots(slot_max_us: &[u64]) -> String {
    let mut slots: Vec<(usize, u64)> = slot_max_us.iter().copied().enumerate().collect();
    slots.sort_by_key(|&(_, max_us)| std::cmp::Reverse(max_us));
    let points: Vec<String> =
        slots.iter().take(5).map(|&(slot, max_us)| format!("[{},{max_us}]", slot as u128 * SLOT_MS)).collect();
    format!("[{}]", points.join(","))
}

fn percentiles(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "null".into();
    }
    format!(
        r#"{{"count":{},"p50_us":{},"p90_us":{},"p99_us":{},"p999_us":{},"max_us":{}}}"#,
        histogram.len(),
        histogram.value_at_quantile(0.50),
        histogram.value_at_quantile(0.90),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max()
    )
}

/// Quantiles of the latency curve, out to five nines (a log "nines" axis when plotted).
const CURVE_QUANTILES: [f64; 13] =
    [0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99995, 0.99999, 1.0];

/// `[[quantile, µs], ...]` for the quantiles above; the last point is the maximum.
fn curve(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "[]".into();
    }
    let points: Vec<String> = CURVE_QUANTILES
        .iter()
        .map(|&q| format!("[{q},{}]", if q >= 1.0 { histogram.max() } else { histogram.value_at_quantile(q) }))
        .collect();
    format!("[{}]", points.join(","))
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("fikra-loadgen: {error}");
            std::process::exit(2);
        }
    };
    let mut request = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        options.path,
        options.host,
        options.body.len()
    )
    .into_bytes();
    for header in &options.headers {
        request.extend_from_slice(header.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(&options.body);

    let start = Instant::now();
    let measure_from = start + options.warmup;
    let end = measure_from + options.duration;
    let results: Vec<Measured> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..options.threads)
            .map(|thread| {
                let (options, request) = (&options, &request);
                scope.spawn(move || {
                    let mut runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                        .enable_timer()
                        .build()
                        .expect("a monoio runtime");
                    runtime.block_on(async move {
                        let tasks: Vec<_> = (thread..options.connections)
                            .step_by(options.threads)
                            .map(|index| {
                                let (options, request) = (options.clone(), request.to_vec());
                                monoio::spawn(async move {
                                    run_connection(&options, &request, index, start, measure_from, end).await
                                })
                            })
                            .collect();
                        let mut measured = Vec::new();
                        for task in tasks {
                            measured.push(task.await);
                        }
                        measured
                    })
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("load thread")).collect()
    });
    let mut total = Measured {
        latency: histogram(),
        first_event: histogram(),
        first_event_outside_upstream: histogram(),
        between_events: histogram(),
        responses: 0,
        non_2xx: 0,
        errors: 0,
        slot_max_us: Vec::new(),
    };
    for measured in &results {
        let _ = total.latency.add(&measured.latency);
        let _ = total.first_event.add(&measured.first_event);
        let _ = total.first_event_outside_upstream.add(&measured.first_event_outside_upstream);
        let _ = total.between_events.add(&measured.between_events);
        total.responses += measured.responses;
        total.non_2xx += measured.non_2xx;
        total.errors += measured.errors;
        if total.slot_max_us.len() < measured.slot_max_us.len() {
            total.slot_max_us.resize(measured.slot_max_us.len(), 0);
        }
        for (total_max, max) in total.slot_max_us.iter_mut().zip(&measured.slot_max_us) {
            *total_max = (*total_max).max(*max);
        }
    }
    // With `--requests` the run ends when the last answer is in, not at `end`.
    let seconds =
        if options.requests > 0 { measure_from.elapsed().as_secs_f64() } else { options.duration.as_secs_f64() };
    println!(
        r#"{{"mode":"{}","connections":{},"rate_target":{},"duration_s":{:.3},"responses":{},"requests_per_s":{:.1},"non_2xx":{},"errors":{},"latency":{},"time_to_first_event":{},"first_event_outside_upstream":{},"between_events":{},"latency_curve":{},"worst_slots":{}}}"#,
        if options.rate > 0.0 { "open" } else { "closed" },
        options.connections,
        options.rate,
        seconds,
        total.responses,
        total.responses as f64 / seconds,
        total.non_2xx,
        total.errors,
        percentiles(&total.latency),
        percentiles(&total.first_event),
        percentiles(&total.first_event_outside_upstream),
        percentiles(&total.between_events),
        curve(&total.latency),
        worst_slots(&total.slot_max_us)
    );
}

#[cfg(test)]
mod tests {
    use super::stamped_upstream_wait_us;

    // Goal: the sandbox's wait is read from a stamped chunk, and nothing from an unstamped one.
    #[test]
    fn reads_the_sandbox_stamp() {
        let stamped = br#"data: {"id":"c","choices":[{"index":0,"delta":{"content":"habari"}}],"x_sandbox_us":[1764000000000001,1764000000020346]}"#;
        assert_eq!(stamped_upstream_wait_us(stamped), Some(20_345));
        let plain = br#"data: {"id":"c","choices":[{"index":0,"delta":{"content":"habari"}}]}"#;
        assert_eq!(stamped_upstream_wait_us(plain), None);
        let backwards = br#"data: {"x_sandbox_us":[20,10]}"#;
        assert_eq!(stamped_upstream_wait_us(backwards), None);
    }

    // Goal: the slowest slices come first, each named by its start in ms.
    #[test]
    fn worst_slots_slowest_first() {
        assert_eq!(
            super::worst_slots(&[5, 900, 7, 0, 61_000, 8, 9]),
            "[[400,61000],[100,900],[600,9],[500,8],[200,7]]"
        );
        assert_eq!(super::worst_slots(&[]), "[]");
    }
}
