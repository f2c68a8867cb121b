-- Who enrolled each patient (or recorded the prior agreement) and who withdrew the enrolment:
-- the authenticated caller's identity, as decisions record theirs. Enrolments made before this
-- migration keep '' and NULL: their callers were not recorded.
ALTER TABLE enrolments ADD COLUMN enrolled_by TEXT NOT NULL DEFAULT '';
ALTER TABLE enrolments ADD COLUMN withdrawn_by TEXT;
