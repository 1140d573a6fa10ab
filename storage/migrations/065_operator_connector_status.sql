-- 065 (both modes): each T/CEC 102 connector's last known status (docs/adr/0015-tcec102.md,
-- "Connectors"). A pile's connector_status and fault are computed from every one of its
-- connectors' last known statuses, by one rule for pushes and pulls
-- (interconnect/tcec102/mapping.py pile_readings): the status and the time it was reported
-- are kept per connector here, and a status is replaced only by a newer one (status_at).
-- NULL: no status known yet (the connector is left out of its pile's state).
ALTER TABLE operator_connectors
    ADD COLUMN status smallint CHECK (status IN (0, 1, 2, 3, 4, 255)),
    ADD COLUMN status_at timestamptz,
    ADD CONSTRAINT operator_connectors_status_at CHECK ((status IS NULL) = (status_at IS NULL));
