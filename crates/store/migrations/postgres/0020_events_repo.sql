-- PostgreSQL mirror of sqlite/0020.
ALTER TABLE pipelines ADD COLUMN events_repo TEXT;
CREATE INDEX pipelines_events_repo ON pipelines (events_repo)
