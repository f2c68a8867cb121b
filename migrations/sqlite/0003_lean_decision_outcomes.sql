-- Listing by therapy, status and route looks outcomes up by (decision_id, therapy), which the
-- primary key serves: the separate (therapy, status, route) index was never used, and each
-- outcome row paid for it. WITHOUT ROWID makes the primary key the table, so an outcome row is
-- one b-tree insert instead of three.
CREATE TABLE decision_outcomes_lean (
    decision_id TEXT NOT NULL REFERENCES decisions (decision_id),
    therapy INTEGER NOT NULL,
    status INTEGER NOT NULL,
    route INTEGER NOT NULL,
    PRIMARY KEY (decision_id, therapy)
) WITHOUT ROWID;
INSERT INTO decision_outcomes_lean (decision_id, therapy, status, route)
    SELECT decision_id, therapy, status, route FROM decision_outcomes;
DROP TABLE decision_outcomes;
ALTER TABLE decision_outcomes_lean RENAME TO decision_outcomes;
