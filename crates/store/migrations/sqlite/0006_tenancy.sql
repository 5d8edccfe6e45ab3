-- (No semicolons in comments: the migration runner splits on them.)
-- Tenancy and security (issue 6): departments, projects, users with roles, project
-- membership, API tokens, UI sessions, the audit log, project secrets, and who
-- created each pipeline and binding. Times are epoch milliseconds.
CREATE TABLE departments (
    name       TEXT    PRIMARY KEY,
    created_at INTEGER NOT NULL
);
INSERT INTO departments (name, created_at) VALUES ('Default', 0);

CREATE TABLE projects (
    name       TEXT    PRIMARY KEY,
    department TEXT    NOT NULL REFERENCES departments (name),
    created_at INTEGER NOT NULL
);
INSERT INTO projects (name, department, created_at) VALUES ('admin', 'Default', 0);
-- Projects pipelines already name become real projects of the default department.
INSERT OR IGNORE INTO projects (name, department, created_at) SELECT DISTINCT project, 'Default', 0 FROM pipelines;

CREATE TABLE users (
    name          TEXT    PRIMARY KEY,
    role          TEXT    NOT NULL,         -- admin | manager | user
    password_hash TEXT,                     -- Argon2id PHC string, NULL: no UI login
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE memberships (
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    project   TEXT NOT NULL REFERENCES projects (name) ON DELETE CASCADE,
    PRIMARY KEY (user_name, project)
);

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_name    TEXT    NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    token_sha256 TEXT    NOT NULL UNIQUE,   -- the token itself is shown once, never stored
    scope        TEXT    NOT NULL,          -- read | write
    expires_at   INTEGER,                   -- NULL: does not expire
    revoked_at   INTEGER,
    last_used_at INTEGER,
    created_at   INTEGER NOT NULL,
    UNIQUE (user_name, name)
);

CREATE TABLE sessions (
    id_sha256  TEXT    PRIMARY KEY,         -- SHA-256 of the cookie value
    user_name  TEXT    NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf       TEXT    NOT NULL,            -- sent back in X-CSRF-Token on state changes
    client_ip  TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    actor     TEXT    NOT NULL,             -- user name, or `-` when unauthenticated
    action    TEXT    NOT NULL,             -- e.g. `POST /pipelines/{key}/copy`, `login`
    object    TEXT    NOT NULL,             -- the request path, or the object named
    outcome   INTEGER NOT NULL,             -- the HTTP status answered
    client_ip TEXT
);
CREATE INDEX audit_by_time ON audit_log (at);

CREATE TABLE secrets (
    project    TEXT    NOT NULL REFERENCES projects (name) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    value      TEXT    NOT NULL,            -- sealed: `wharf-sealed:v1:<key id>:<nonce+ciphertext>`
    created_by TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (project, name)
);

-- Rows from before tenancy were made with the single admin token.
ALTER TABLE pipelines ADD COLUMN created_by TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE bindings ADD COLUMN created_by TEXT NOT NULL DEFAULT 'admin'
