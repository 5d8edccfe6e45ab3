-- PostgreSQL mirror of sqlite/0009.
-- Retention of webhook deliveries (issue 11): the newest N are kept, refused ones in a
-- smaller ring of their own. Pruning finds the cut by verdict and id.
CREATE INDEX deliveries_by_verdict ON deliveries (verdict, id);
