//! The OpenAI wire format as the gateway needs it: chat requests, Responses requests
//! translated to and from chat, and the model registry.

pub mod chat;
pub mod models;
pub mod responses;
pub mod tokenize;
pub mod usage_cost;
