-- Registries (issue 4): OCI registries images are pushed to, and their workspaces
-- (repository namespaces such as `devops`). Times are epoch ms.
CREATE TABLE registries (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL UNIQUE,
    host       TEXT    NOT NULL,            -- host[:port], as image references name it
    username   TEXT,
    password   TEXT,                        -- secret: never returned by the API (encrypted at rest with issue 6)
    insecure   INTEGER NOT NULL DEFAULT 0,  -- 1: plain HTTP (a local registry)
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE registry_workspaces (
    registry_id INTEGER NOT NULL REFERENCES registries (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (registry_id, name)
);
