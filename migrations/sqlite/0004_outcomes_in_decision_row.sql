-- Each decision's outcomes move into its own row: one `TT:SS:RR` token per therapy answered
-- (therapy, eligibility status, funding route; two digits each, 00 where not applicable),
-- separated and surrounded by spaces, for example ' 03:01:00 04:02:00 '. Listing by therapy, status and
-- route matches the row with LIKE ('% 03:01:__ %'). The separate table cost every record 14 more
-- rows, 14 foreign-key checks and most of the writer's statements.
ALTER TABLE decisions ADD COLUMN outcomes TEXT NOT NULL DEFAULT '';
UPDATE decisions SET outcomes = COALESCE(
    (SELECT ' ' || group_concat(printf('%02d:%02d:%02d', therapy, status, route), ' ') || ' '
       FROM decision_outcomes o WHERE o.decision_id = decisions.decision_id),
    '');
DROP TABLE decision_outcomes;
