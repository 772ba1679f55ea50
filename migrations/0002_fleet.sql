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

-- Each replica's pins, refreshed every bookkeeping round; a pin not refreshed for a while
-- (unpinned, or its replica gone) no longer holds the blob.
CREATE TABLE shared_pins (
    digest       text NOT NULL,
    holder       text NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (digest, holder)
);
