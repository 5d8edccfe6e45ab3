-- Approvals (issue 17): every decision on an `approval` task, one per user and task of
-- a run. The run's record carries the decisions too once the task ended, this table
-- is what a waiting task (and a restarted server) reads.
CREATE TABLE approval_decisions (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task     TEXT    NOT NULL,
    user     TEXT    NOT NULL,
    verdict  TEXT    NOT NULL,          -- approve | reject
    comment  TEXT    NOT NULL DEFAULT '',
    at       INTEGER NOT NULL,          -- epoch milliseconds
    UNIQUE (run_id, task, user)
);

-- Notifications (issue 17): every delivery attempt of a run's notifications.
CREATE TABLE notification_attempts (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    event    TEXT    NOT NULL,          -- success | failure | waiting
    channel  TEXT    NOT NULL,          -- webhook | email
    target   TEXT    NOT NULL,          -- the URL without its query, or the addresses
    attempt  INTEGER NOT NULL,          -- 1, 2, … per notification
    outcome  TEXT    NOT NULL,          -- delivered | failed
    detail   TEXT    NOT NULL DEFAULT '',
    at       INTEGER NOT NULL
);
CREATE INDEX notification_attempts_run ON notification_attempts (run_id)
