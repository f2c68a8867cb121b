-- Listing by therapy, status and route looks outcomes up by (decision_id, therapy), which the
-- primary key serves: the separate (therapy, status, route) index was never used, and each
-- outcome row paid for it.
DROP INDEX decision_outcomes_by_therapy;
