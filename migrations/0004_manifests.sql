-- Manifests and tag answers shared by a fleet, so one replica's upstream GET serves them all.
-- A tag is keyed by a hash of (upstream, repository, tag, Accept); manifests by digest (each
-- replica verifies the bytes against it before use).
CREATE TABLE shared_tags (
    key        text PRIMARY KEY,
    digest     text NOT NULL,
    media_type text NOT NULL,
    size       bigint NOT NULL,
    checked    bigint NOT NULL
);

CREATE TABLE shared_manifests (
    digest     text PRIMARY KEY,
    media_type text NOT NULL,
    bytes      bytea NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now()
);
