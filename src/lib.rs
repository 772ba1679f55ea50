//! pullsecret: registry pull secrets for container tools.

pub mod admin;
pub mod cli;
pub mod config;
pub mod fsutil;
pub mod gocompat;
pub mod helper;
pub mod kubelet;
pub mod proxy;
pub mod pull;
pub mod registry;
pub mod registry_login;
pub mod secret;
pub mod store;
