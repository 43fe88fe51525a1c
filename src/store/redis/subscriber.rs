//! The subscriber: one thread per store listening on the revocation, top-up and key channels,
//! the generation counters it bumps for the workers, and the key directory it keeps current.
//!
//! Owns `Events` (the counters, whether a subscription is live, the stop flag) and the thread's
//! loop: connect to a node, subscribe, count messages, and on any failure start again on the
//! next node after a backoff. Every (re)subscription bumps both counters, since messages may
//! have been missed meanwhile. It runs on its own blocking thread, never on a worker; workers
//! only read the counters (atomics) and never wait for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::directory::{KeyDirectory, parse_creation_message};
use super::replies::Push;
use crate::limits::{
    REDIS_RECONNECT_BACKOFF_MAX_MS as RECONNECT_BACKOFF_MAX_MS,
    REDIS_RECONNECT_BACKOFF_MIN_MS as RECONNECT_BACKOFF_MIN_MS,
};
use crate::redis::{Frame, encode_command, reply_len};

use crate::limits::{REDIS_SUBSCRIBER_CONNECT_TIMEOUT_MS, REDIS_SUBSCRIBER_POLL_MS};

/// How long the subscriber waits on a read before checking whether it should stop.
const SUBSCRIBER_POLL: Duration = Duration::from_millis(REDIS_SUBSCRIBER_POLL_MS);

/// What the subscriber thread tells the workers.
#[derive(Default)]
pub(super) struct Events {
    pub revocations: AtomicU64,
    pub topups: AtomicU64,
    pub subscribed: AtomicBool,
    pub stop: AtomicBool,
    /// The node's keys, kept current from the `keys` and `revocations` channels.
    pub directory: KeyDirectory,
}

/// The channels the subscriber listens on.
pub(super) struct Channels {
    pub revocations: String,
    pub topups: String,
    /// New keys (`directory::creation_message`).
    pub keys: String,
}

/// Starts the subscriber thread: it tries `nodes` in turn until `events.stop`, subscribed to
/// every channel of `channels`.
pub(super) fn start(events: Arc<Events>, nodes: Vec<SocketAddr>, password: Option<String>, channels: Channels) {
    let spawned = std::thread::Builder::new().name("fikra-redis-sub".into()).spawn(move || {
        let mut backoff = Duration::from_millis(RECONNECT_BACKOFF_MIN_MS);
        let mut next_node = 0usize;
        while !events.stop.load(Ordering::Acquire) {
            let addr = nodes[next_node % nodes.len()];
            next_node += 1;
            subscribe(addr, password.as_deref(), &channels, &events);
            // A session that got as far as subscribing starts the backoff over.
            if events.subscribed.swap(false, Ordering::AcqRel) {
                backoff = Duration::from_millis(RECONNECT_BACKOFF_MIN_MS);
            }
            if events.stop.load(Ordering::Acquire) {
                break;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(RECONNECT_BACKOFF_MAX_MS));
        }
    });
    if let Err(error) = spawned {
        crate::log_error!("cannot start the redis subscriber: {error}");
    }
}

/// One subscription session: returns when the connection fails or the store stops.
fn subscribe(addr: SocketAddr, password: Option<&str>, channels: &Channels, events: &Events) {
    use std::io::{Read, Write};
    let Ok(mut stream) =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(REDIS_SUBSCRIBER_CONNECT_TIMEOUT_MS))
    else {
        return;
    };
    let _ = stream.set_read_timeout(Some(SUBSCRIBER_POLL));
    let mut out = Vec::new();
    if let Some(password) = password {
        encode_command(&mut out, &[b"AUTH", password.as_bytes()]);
    }
    let args: [&[u8]; 4] =
        [b"SUBSCRIBE", channels.revocations.as_bytes(), channels.topups.as_bytes(), channels.keys.as_bytes()];
    encode_command(&mut out, &args);
    if stream.write_all(&out).is_err() {
        return;
    }
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if events.stop.load(Ordering::Acquire) {
            return;
        }
        loop {
            let len = match reply_len(&buffer) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(_) => return,
            };
            let Some(frame) = Frame::of_reply(&buffer[..len]) else { return };
            match Push::of(frame) {
                // Messages may have been missed while not subscribed.
                Push::Subscribed if !events.subscribed.swap(true, Ordering::AcqRel) => {
                    events.directory.mark_unsynced();
                    events.revocations.fetch_add(1, Ordering::AcqRel);
                    events.topups.fetch_add(1, Ordering::AcqRel);
                }
                Push::Message { channel, payload } if channel == channels.revocations => {
                    if let Ok(key_id) = std::str::from_utf8(payload) {
                        events.directory.revoke(key_id);
                    }
                    events.revocations.fetch_add(1, Ordering::AcqRel);
                }
                Push::Message { channel, payload } if channel == channels.keys => {
                    match parse_creation_message(payload) {
                        Some((hash, record)) => {
                            // A known key changed (its cap, say): workers drop their cached
                            // records. A new key or a repeated message changes nothing cached.
                            if events.directory.remember(hash, record) {
                                events.revocations.fetch_add(1, Ordering::AcqRel);
                            }
                        }
                        None => crate::log_warn_every!("redis subscriber {addr}: a malformed key-directory message"),
                    }
                }
                Push::Message { .. } => {
                    events.topups.fetch_add(1, Ordering::AcqRel);
                }
                Push::Error(message) => {
                    crate::log_warn_every!("redis subscriber {addr}: {message}");
                    return;
                }
                Push::Subscribed | Push::Other => {}
            }
            buffer.drain(..len);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}
