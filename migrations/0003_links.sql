-- Content links shared by a fleet: an upstream confirmed that a credential identity may read a
-- digest in a repository. Keyed by a hash of (identity, upstream, repository, digest), so the
-- table names none of them.
CREATE TABLE content_links (
    key          text PRIMARY KEY,
    confirmed_at timestamptz NOT NULL DEFAULT now()
);
