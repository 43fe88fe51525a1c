//! What talks to models: the built-in sandbox model and its reply writer, and the upstream
//! providers (pooled HTTP/1.1 over TCP or TLS, the exchange, the rewrite of answers).
//!
//! A backend answers an admitted request and reports the usage to settle with; it never admits,
//! settles or bills, and it never renders a refusal of its own: failures before the response
//! head go back to `api` as data.

pub mod sandbox;
pub mod upstream;
