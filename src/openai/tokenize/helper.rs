//! The helper thread that counts tokens, so a worker never spends its core on it.
//!
//! A worker hands a job (a tokenizer and a copy of the chat body) to one process-wide helper
//! thread through a bounded queue and awaits the answer: the helper finds the message texts
//! (`texts`, within the byte budget) and counts them: its other connections keep being served meanwhile. The
//! queue never blocks the sender: when it is full, or the helper is gone, the caller gets `None`
//! and the byte bound decides, as it would without a tokenizer. A panic while counting (say a
//! pattern's backtracking limit) ends that job alone (`None`), never the helper or a worker.
//! It owns nothing else: no decision, no metric (the caller times the wait).

use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};

use futures_channel::oneshot;

use super::Tokenizer;
use crate::limits::TOKENIZE_QUEUE_MAX_JOBS;

struct Job {
    tokenizer: Arc<Tokenizer>,
    body: Vec<u8>,
    budget_bytes: u64,
    reply: oneshot::Sender<MessageCount>,
}

/// What the helper found in a chat body: the bytes of the texts it counted (within the budget)
/// and their tokens.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MessageCount {
    pub text_bytes: u64,
    pub tokens: u64,
}

/// Counts the message texts of a chat `body` (`texts::message_texts`) with `tokenizer`: the
/// helper's work, callable anywhere (tests, benches).
pub fn count_message_texts(tokenizer: &Tokenizer, body: &[u8], budget_bytes: u64) -> Option<MessageCount> {
    let texts = super::texts::message_texts(body, budget_bytes)?;
    let tokens = texts.pieces.iter().fold(0u64, |total, piece| total.saturating_add(tokenizer.count(piece)));
    Some(MessageCount { text_bytes: texts.text_bytes, tokens })
}

/// The helper's queue, started on first use (`None`: the thread could not be started).
fn queue() -> Option<&'static SyncSender<Job>> {
    static QUEUE: OnceLock<Option<SyncSender<Job>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (sender, receiver) = sync_channel::<Job>(TOKENIZE_QUEUE_MAX_JOBS);
            let started = std::thread::Builder::new().name("fikra-tokenize".into()).spawn(move || {
                while let Ok(job) = receiver.recv() {
                    let Job { tokenizer, body, budget_bytes, reply } = job;
                    let counted =
                        std::panic::catch_unwind(move || count_message_texts(&tokenizer, &body, budget_bytes));
                    if let Ok(Some(count)) = counted {
                        // The requester may have gone (its client closed): nothing to do then.
                        let _ = reply.send(count);
                    }
                }
            });
            started.ok().map(|_| sender)
        })
        .as_ref()
}

/// `count_message_texts` on the helper thread; `None` when the helper cannot take the job now
/// (queue full, thread gone) or the count failed (the body was not the JSON it should be).
pub async fn count_off_worker(tokenizer: Arc<Tokenizer>, body: Vec<u8>, budget_bytes: u64) -> Option<MessageCount> {
    let (reply, answer) = oneshot::channel();
    match queue()?.try_send(Job { tokenizer, body, budget_bytes, reply }) {
        Ok(()) => answer.await.ok(),
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => None,
    }
}
