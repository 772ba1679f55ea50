//! docker `config.json` and containers `auth.json`: read, look up, write.
