-- PostgreSQL mirror of sqlite/0003.
-- OAuth flows that survive a restart, expiring OAuth tokens, and single-use Gitee
-- signatures (issue 5). Times are epoch ms.
CREATE TABLE oauth_states (
    state_sha256 TEXT    PRIMARY KEY,       -- SHA-256 of the `state` handed out (never the value itself)
    binding      TEXT    NOT NULL,
    provider     TEXT    NOT NULL,
    redirect_uri TEXT    NOT NULL,          -- the exchange must name the same one
    expires_at   BIGINT  NOT NULL
);

ALTER TABLE bindings ADD COLUMN refresh_token TEXT;        -- secret: trades for a new token
ALTER TABLE bindings ADD COLUMN token_expires_at BIGINT;   -- NULL: the token does not expire
ALTER TABLE bindings ADD COLUMN oauth_redirect_uri TEXT;   -- GitLab wants it again on refresh

ALTER TABLE deliveries ADD COLUMN signature_sha256 TEXT;   -- Gitee signature mode: SHA-256 of X-Gitee-Token
CREATE INDEX deliveries_by_signature ON deliveries (signature_sha256);
CREATE INDEX runs_by_commit ON runs (pipeline_id, commit_sha);
