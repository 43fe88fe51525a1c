//! HTTP/1.1 for every listener: accept loops, request framing, the connection loop, response
//! writing.
//!
//! Nothing in here knows about keys, models or money; it moves bytes with limits.

pub mod chunked;
pub mod client_read;
pub mod cors;
pub mod date;
pub mod deadlines;
pub mod duration;
pub mod future_slot;
pub mod head_spans;
pub mod listener;
pub mod request;
pub mod response;
pub mod server;
