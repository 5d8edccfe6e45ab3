-- PostgreSQL mirror of sqlite/0013.
-- The pipeline version its timer rows were last computed from (issue 19), also when it
-- has no timers: a start only looks at pipelines whose latest version differs, instead
-- of reading and parsing every pipeline. NULL: not computed yet (the first start after
-- this migration checks each pipeline once).
ALTER TABLE pipelines ADD COLUMN timers_version BIGINT
