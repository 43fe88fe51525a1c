//! HTTP/1.1 for both listeners: request framing, the connection loop, response writing.
//!
//! Nothing in here knows about keys, models or money; it moves bytes with limits.

pub mod chunked;
pub mod date;
pub mod duration;
pub mod request;
pub mod response;
pub mod server;
