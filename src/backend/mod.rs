//! What talks to models: the built-in sandbox model and its reply writer, and the upstream
//! providers (pooled HTTP/1.1 over TCP or TLS, the exchange, the rewrite of answers), and the
//! one outbound client that is not a model: Safaricom Daraja for M-Pesa (`daraja`), on the same
//! HTTP client.
//!
//! A backend answers an admitted request and reports the usage to settle with; it never admits,
//! settles or bills, and it never renders a refusal of its own: failures before the response
//! head go back to `api` as data.

pub mod daraja;
pub mod sandbox;
pub mod upstream;
