-- (No semicolons in comments: the migration runner splits on them.)
-- Clusters (issue 13): Kubernetes clusters a project deploys to. The kubeconfig is a
-- secret (sealed like the others, never answered). `short_id` names the pipeline
-- namespace `ecp-devops-<short_id>`: 8 random lowercase hex digits made at
-- registration, never changed. Health is the last check's outcome. Times are epoch ms.
CREATE TABLE clusters (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    project       TEXT    NOT NULL REFERENCES projects (name),
    server        TEXT    NOT NULL,         -- the API server URL of the chosen context
    context       TEXT    NOT NULL,         -- the kubeconfig context in use
    kubeconfig    TEXT    NOT NULL,         -- secret: sealed, never returned by the API
    short_id      TEXT    NOT NULL UNIQUE,
    version       TEXT,                     -- gitVersion, once a check succeeded
    nodes_ready   INTEGER,
    nodes_total   INTEGER,
    health        TEXT    NOT NULL,         -- healthy | unreachable | unauthorized | forbidden | refused | error | unchecked
    health_error  TEXT,
    checked_at    INTEGER,
    created_by    TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX clusters_project ON clusters (project);
