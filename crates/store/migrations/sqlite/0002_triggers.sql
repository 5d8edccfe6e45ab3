-- Repository bindings, webhook deliveries and timer state (issue 5). Times are epoch ms.
CREATE TABLE bindings (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT    NOT NULL UNIQUE,
    provider       TEXT    NOT NULL,        -- github | gitlab | gitee | git
    url            TEXT,                    -- instance URL of a private GitLab/Gitee/GitHub Enterprise
    client_id      TEXT,
    client_secret  TEXT,                    -- secret: never returned by the API
    token          TEXT,                    -- secret: OAuth or personal access token
    webhook_secret TEXT,                    -- secret: verifies deliveries
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);

CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    binding     TEXT    NOT NULL,           -- the binding name in the URL
    provider    TEXT    NOT NULL,
    delivery_id TEXT    NOT NULL,           -- the provider's id (X-GitHub-Delivery, …)
    event       TEXT    NOT NULL,           -- the event header as sent
    headers     TEXT    NOT NULL,           -- JSON object, secret-bearing headers redacted
    body        BLOB,                       -- kept for replay
    body_sha256 TEXT    NOT NULL,
    verdict     TEXT    NOT NULL,           -- received | started | ignored | duplicate | rejected
    reason      TEXT,
    runs        TEXT    NOT NULL DEFAULT '[]', -- JSON array of run ids started
    received_at INTEGER NOT NULL
);
CREATE INDEX deliveries_by_provider_id ON deliveries (provider, binding, delivery_id);

CREATE TABLE timers (
    pipeline_id   INTEGER NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    trigger_index INTEGER NOT NULL,         -- position in the version's `triggers`
    version       INTEGER NOT NULL,         -- the pipeline version it was computed from
    next_run_at   INTEGER,                  -- NULL: never fires again
    last_due      INTEGER,                  -- the last due time handled
    PRIMARY KEY (pipeline_id, trigger_index)
);
