//! pullsecret: registry pull secrets for container tools.

pub mod secret;
pub mod store;
