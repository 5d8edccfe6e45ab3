-- Stage triggers (issue 17): the token of each stage's hook URL, kept as its SHA-256
-- (the token itself is shown once), and every signal that came for a waiting stage of
-- a run: a waiting stage (and a restarted server) reads them here.
CREATE TABLE stage_hooks (
    pipeline_id  INTEGER NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    stage        TEXT    NOT NULL,
    token_sha256 TEXT    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (pipeline_id, stage)
);

CREATE TABLE stage_signals (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    stage   TEXT    NOT NULL,
    source  TEXT    NOT NULL,          -- hook | channel:<name>
    vals    TEXT    NOT NULL,          -- a JSON object of strings
    at      INTEGER NOT NULL           -- epoch milliseconds
);
CREATE INDEX stage_signals_run ON stage_signals (run_id, stage)
