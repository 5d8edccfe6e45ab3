-- PostgreSQL mirror of sqlite/0011.
-- (No semicolons in comments: the migration runner splits on them.)
-- Issue 11: users can be disabled (no login, their tokens and sessions refused at
-- once, kept for when they are enabled again), and POST .../runs takes an
-- Idempotency-Key: the run a key started, per pipeline and caller, kept 24 hours.
ALTER TABLE users ADD COLUMN disabled_at BIGINT ;

CREATE TABLE run_requests (
    pipeline_id BIGINT  NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    caller      TEXT    NOT NULL,           -- the user who sent the key
    key         TEXT    NOT NULL,           -- the Idempotency-Key header
    body_sha256 TEXT    NOT NULL,           -- of the request as understood (parameters)
    run_id      BIGINT,                    -- NULL while the first request is being served
    number      BIGINT,
    created_at  BIGINT  NOT NULL,
    PRIMARY KEY (pipeline_id, caller, key)
);
CREATE INDEX run_requests_by_age ON run_requests (created_at)
