-- Listing decisions by outcome (therapy, status, route) reads each decision's outcomes from the
-- time index instead of from its row. In the row the outcomes come after the record, kilobytes
-- held in overflow pages, so a filter that matched few decisions read every record: 33 s from a
-- cold cache over 200,000 decisions of 8 KB, against 0.3 s from this index (docs/performance.md).
-- The index replaces decisions_by_time, of which it is an extension. Building it reads every
-- record once, at the start after the upgrade.
DROP INDEX decisions_by_time;
CREATE INDEX decisions_by_time ON decisions (received_at_ms DESC, decision_id DESC, outcomes);
