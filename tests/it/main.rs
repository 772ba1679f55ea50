//! Integration tests against real binaries and services; one test binary for all of them.

// Tests print diagnostics for whoever reads a failure.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod admin;
mod architecture;
mod canary;
mod cli_manners;
mod cli_store;
mod cold_ranges;
mod console;
mod failover;
mod faults;
mod fleet;
mod fleet_engines;
mod helper_clients;
mod helper_protocol;
mod keyring_backends;
mod kubectl_oracle;
mod kubelet;
mod login;
mod observability;
mod parallel_fetch;
mod prefetch;
mod proxy;
mod proxy_server;
mod proxy_teams;
mod pull;
mod read_api;
mod registry_smoke;
mod restart;
mod security;
mod slots;
mod stress;
mod support;
mod transports;
mod wan;
mod warm;
