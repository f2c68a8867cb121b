-- Listing decisions by outcome (therapy, status, route) reads each decision's outcomes from the
-- time index instead of from its row. A filter that matched few decisions read every page of
-- the table: 11 s from a cold cache over 200,000 decisions of 8 KB in 16 KB pages (33 s in 4 KB
-- pages, where each record also filled overflow pages), against 0.35 s from this index
-- (docs/performance.md). The index replaces decisions_by_time, of which it is an extension.
-- Building it reads the table once, at the first start after the upgrade: 2.3 s from a cold
-- cache for those 200,000 decisions.
DROP INDEX decisions_by_time;
CREATE INDEX decisions_by_time ON decisions (received_at_ms DESC, decision_id DESC, outcomes);
