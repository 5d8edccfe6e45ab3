-- What a list of pipelines shows of each version, kept as JSON at save (the server
-- writes it from the parsed version), so a page of a list need not parse 50 YAML
-- documents. NULL for versions saved before it existed: those are parsed.
ALTER TABLE pipeline_versions ADD COLUMN listing TEXT
