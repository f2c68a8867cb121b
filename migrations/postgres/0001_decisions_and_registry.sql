-- Decision log and PRRT audit registry. Identifiers appear only as keyed pseudonyms.
CREATE TABLE decisions (
    decision_id TEXT PRIMARY KEY,
    request_id TEXT UNIQUE,
    request_hash TEXT NOT NULL,
    kind INTEGER NOT NULL,
    received_at_ms BIGINT NOT NULL,
    caller TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    policy_hash TEXT NOT NULL,
    as_of TEXT NOT NULL,
    patient_pseudonym TEXT,
    record BYTEA NOT NULL
);
CREATE INDEX decisions_by_time ON decisions (received_at_ms DESC, decision_id DESC);
CREATE INDEX decisions_by_patient ON decisions (patient_pseudonym, received_at_ms DESC, decision_id DESC);

-- One row per therapy answered, so decisions can be filtered by therapy, status and route.
CREATE TABLE decision_outcomes (
    decision_id TEXT NOT NULL REFERENCES decisions (decision_id),
    therapy INTEGER NOT NULL,
    status INTEGER NOT NULL,
    route INTEGER NOT NULL,
    PRIMARY KEY (decision_id, therapy)
);
CREATE INDEX decision_outcomes_by_therapy ON decision_outcomes (therapy, status, route);

-- Serialises enrolments per registry (SELECT ... FOR UPDATE), so capacity holds across replicas.
CREATE TABLE registry_locks (
    registry_id TEXT PRIMARY KEY
);

CREATE TABLE enrolments (
    enrolment_id TEXT PRIMARY KEY,
    registry_id TEXT NOT NULL,
    patient_pseudonym TEXT NOT NULL,
    reason INTEGER NOT NULL,
    mdt_reference TEXT NOT NULL,
    decision_date TEXT NOT NULL,
    active INTEGER NOT NULL,
    agreed_before_hold INTEGER NOT NULL,
    created_at_ms BIGINT NOT NULL,
    withdrawn_at_ms BIGINT,
    withdrawal_reason TEXT
);
CREATE INDEX enrolments_by_patient ON enrolments (patient_pseudonym, registry_id, active);
CREATE INDEX enrolments_by_registry ON enrolments (registry_id, active, created_at_ms DESC, enrolment_id DESC);
-- At most one active enrolment per patient and registry.
CREATE UNIQUE INDEX enrolments_one_active ON enrolments (registry_id, patient_pseudonym) WHERE active = 1;
