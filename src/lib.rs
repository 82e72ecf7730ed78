//! termphone: a terminal softphone with multi-device calls and chat, and the
//! relay it talks to, in one crate.
//!
//! The shape (docs/architecture.md): sans-IO cores (`relay::core`,
//! `client::engine`) that take time as an input, thin tokio shells around
//! them (`relay::server`, `client::connection`), one wire-protocol module
//! (`protocol`), TLS at the edge of both shells (`tls`), and two front ends
//! over the same client engine (`tui`, `headless`).

pub mod admin;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod error;
pub mod flow;
pub mod headless;
pub mod ids;
pub mod load;
pub mod logging;
pub mod media;
pub mod profile;
pub mod protocol;
pub mod relay;
pub mod signals;
pub mod time;
pub mod tls;
pub mod tui;
pub mod usersig;
