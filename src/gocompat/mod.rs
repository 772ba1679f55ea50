//! Byte-compatibility with the Go programs we stand in for: Go's JSON writing and syntax
//! errors, and go-yaml v2's scalar and key-order rules.

pub mod json;
pub mod json_syntax;
pub mod yaml;
