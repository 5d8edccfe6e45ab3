-- PostgreSQL mirror of sqlite/0017.
-- Replicas on one database (issue 18): what several servers must agree on.
--
-- log_chunks: task logs kept in the database (on PostgreSQL, where replicas share
-- nothing but the database - SQLite keeps its log files). A chunk is whole lines of one
-- log, `start` its byte offset in that log. Chunks of a log are contiguous, so the
-- primary key refuses a second chunk at an offset another writer already filled.
-- `truncated` marks the chunk that ends with the cap's marker.
CREATE TABLE log_chunks (
    run_id    BIGINT  NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    log_key   TEXT    NOT NULL,          -- run | checkout | <stage>-<task>
    start     BIGINT  NOT NULL,
    data      BYTEA   NOT NULL,
    truncated BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (run_id, log_key, start)
);

-- The due time a timer run was started for: one run per pipeline and due time, however
-- many schedulers claim it (NULL for every other run).
ALTER TABLE runs ADD COLUMN timer_due BIGINT;
CREATE UNIQUE INDEX runs_timer_due ON runs (pipeline_id, timer_due);

-- The first accepted delivery of each provider delivery id: the key two servers
-- receiving the same delivery at once cannot both insert.
CREATE TABLE delivery_claims (
    provider    TEXT    NOT NULL,
    binding     TEXT    NOT NULL,
    delivery_id TEXT    NOT NULL,
    delivery    BIGINT  NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    PRIMARY KEY (provider, binding, delivery_id)
);

-- Deliveries stored before this table: the first accepted one of each id holds it.
INSERT INTO delivery_claims (provider, binding, delivery_id, delivery)
SELECT provider, binding, delivery_id, MIN(id) FROM deliveries
WHERE verdict <> 'rejected' GROUP BY provider, binding, delivery_id
