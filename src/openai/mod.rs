//! The OpenAI wire format as the gateway needs it: chat requests and the model registry.

pub mod chat;
pub mod models;
