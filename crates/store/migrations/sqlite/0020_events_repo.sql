-- The repository whose webhook events may start a pipeline: its latest version's
-- source repo as GitUrl::key when the version has an events trigger, the empty
-- string when it has none. Written with each version, so a delivery reads the few
-- pipelines of its repository instead of parsing every pipeline. NULL for versions
-- saved before it existed (or saved without one): those are parsed.
ALTER TABLE pipelines ADD COLUMN events_repo TEXT;
CREATE INDEX pipelines_events_repo ON pipelines (events_repo)
