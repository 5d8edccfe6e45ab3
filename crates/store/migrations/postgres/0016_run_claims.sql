-- PostgreSQL mirror of sqlite/0016.
-- Run claims (replicas on one database, issue 18): which server runs a run, until when
-- its lease holds (epoch ms, 0 for none) and the fencing counter every write of the
-- run's record is checked against. A run whose lease lapsed may be claimed by another
-- server, which raises the fence, so the previous owner's late writes are refused.
-- stop_request: a stop asked on another server ('stopped', 'superseded:N'), read by the
-- owner when it renews its lease.
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN stop_request TEXT;
