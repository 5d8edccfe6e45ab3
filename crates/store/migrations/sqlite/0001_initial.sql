-- Pipelines, their immutable versions, and runs. Times are epoch milliseconds.
CREATE TABLE pipelines (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project     TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    active      INTEGER NOT NULL DEFAULT 1,
    version     INTEGER NOT NULL,           -- the latest version
    last_number INTEGER NOT NULL DEFAULT 0, -- BUILD_ID of the latest run
    increment   INTEGER NOT NULL DEFAULT 0, -- SYS_INCREMENT
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (project, name)
);

CREATE TABLE pipeline_versions (
    pipeline_id INTEGER NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    source      TEXT    NOT NULL,           -- the YAML (or JSON) as submitted
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (pipeline_id, version)
);

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline_id INTEGER NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    status      TEXT    NOT NULL,
    retry_of    INTEGER,
    commit_sha  TEXT,                       -- the commit asked for (re-runs), then the one checked out
    increment   INTEGER NOT NULL DEFAULT 0, -- SYS_INCREMENT of this run
    record      TEXT    NOT NULL,           -- the RunRecord as JSON: every transition with its time
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (pipeline_id, number)
);
CREATE INDEX runs_by_status ON runs (status);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
