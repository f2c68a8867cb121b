-- Listing decisions by outcome (therapy, status, route) can read each decision's outcomes from
-- the time index, an index-only scan where the table's visibility map allows, instead of from
-- its row. The index replaces decisions_by_time, of which it is an extension.
DROP INDEX decisions_by_time;
CREATE INDEX decisions_by_time ON decisions (received_at_ms DESC, decision_id DESC) INCLUDE (outcomes);
