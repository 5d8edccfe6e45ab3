-- PostgreSQL mirror of sqlite/0019.
ALTER TABLE pipeline_versions ADD COLUMN listing TEXT
