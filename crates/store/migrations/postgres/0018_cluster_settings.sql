-- PostgreSQL mirror of sqlite/0018.
-- (No semicolons in comments: the migration runner splits on them.)
-- Cluster settings (issue 15): the kubernetes executor's defaults for a cluster as JSON
-- (wharf_core::pod::ClusterSettings) - task pod defaults (resources, node selector,
-- tolerations, service account), the pending limit, and the run workspace (mode,
-- storage class, size). `{}` is every default.
ALTER TABLE clusters ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
