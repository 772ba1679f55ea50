-- Shared state for fleet mode: one row per namespace, sealed as in the file store
-- (data sealed with the namespace's data key, the data key wrapped by a master key
-- that is never stored here).
CREATE TABLE namespaces (
    name        text PRIMARY KEY,
    key_id      text NOT NULL,
    wrapped_key bytea NOT NULL,
    data        bytea NOT NULL,
    version     bigint NOT NULL DEFAULT 1,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
