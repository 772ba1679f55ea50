-- Fleet coordination: who fills which blob (a lease with a heartbeat), and what the shared
-- bucket holds (for eviction by least recent use across replicas).
CREATE TABLE fill_leases (
    digest    text PRIMARY KEY,
    holder    text NOT NULL,
    address   text NOT NULL,
    heartbeat timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE shared_blobs (
    digest    text PRIMARY KEY,
    size      bigint NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    last_used timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE shared_pins (
    digest text PRIMARY KEY
);
