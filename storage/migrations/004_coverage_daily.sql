-- 004 (both modes): each target's value per city per day, kept as a series so progress
-- towards the due date can be charted and queried. One row per (target, area, day), written
-- by the coverage snapshot (`qilu storage coverage-snapshot`, the maintenance loop and the
-- ingest's schedule): the row of a day is overwritten until the day ends, so the series holds
-- each day's last snapshot. city_code '370000' is the whole province. The day is the
-- province's calendar day (China Standard Time, UTC+8).

CREATE TABLE coverage_daily (
    day          date NOT NULL,
    target_id    text NOT NULL,
    city_code    text NOT NULL CHECK (city_code ~ '^37[0-9]{4}$'),
    numerator    integer NOT NULL CHECK (numerator >= 0),
    denominator  integer NOT NULL CHECK (denominator >= 0),
    value        double precision,  -- NULL when a ratio has no denominator
    computed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target_id, city_code, day)
);
CREATE INDEX coverage_daily_day ON coverage_daily (day);
