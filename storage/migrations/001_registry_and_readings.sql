-- 001: the asset registry, the readings table and device liveness (plain PostgreSQL layout).
-- The storage issue turns readings into a hypertable / time partitions; the logical names stay.

CREATE TABLE cities (
    code     text PRIMARY KEY CHECK (code ~ '^37[0-9]{4}$'),
    name_en  text NOT NULL,
    name_zh  text NOT NULL,
    lat      double precision NOT NULL,
    lon      double precision NOT NULL
);

CREATE TABLE device_kinds (
    kind                text PRIMARY KEY,
    sector              text NOT NULL CHECK (sector IN ('charging', 'substation', 'ranch')),
    name_en             text NOT NULL,
    name_zh             text NOT NULL,
    interval_s          double precision NOT NULL CHECK (interval_s > 0),
    expected_interval   interval NOT NULL
);

CREATE TABLE metrics (
    metric_id  smallint PRIMARY KEY,
    key        text NOT NULL UNIQUE,
    unit       text NOT NULL
);

CREATE TABLE sites (
    site_id          text PRIMARY KEY,
    sector           text NOT NULL CHECK (sector IN ('charging', 'substation', 'ranch')),
    city_code        text NOT NULL REFERENCES cities (code),
    name             text NOT NULL,
    public           boolean NOT NULL DEFAULT false,
    networked        boolean NOT NULL DEFAULT false,
    voltage_kv       integer NOT NULL DEFAULT 0 CHECK (voltage_kv >= 0),
    gis              boolean NOT NULL DEFAULT false,
    one_key_control  boolean NOT NULL DEFAULT false,
    smart            boolean NOT NULL DEFAULT false,
    agri_base        boolean NOT NULL DEFAULT false
);
CREATE INDEX sites_sector_city ON sites (sector, city_code);

CREATE TABLE devices (
    device_pk  integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id  text NOT NULL UNIQUE,
    site_id    text NOT NULL REFERENCES sites (site_id),
    kind       text NOT NULL REFERENCES device_kinds (kind)
);
CREATE INDEX devices_site ON devices (site_id);

-- One row per reading; the primary key is the natural key that makes redelivery harmless.
CREATE TABLE readings (
    device_pk  integer NOT NULL,
    metric_id  smallint NOT NULL,
    ts         timestamptz NOT NULL,
    value      double precision NOT NULL,
    quality    smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (device_pk, metric_id, ts)
);

-- Latest valid reading per device, kept by the ingest writer in the same transaction as the
-- readings (GREATEST makes a redelivered batch a no-op).
CREATE TABLE device_liveness (
    device_pk  integer PRIMARY KEY,
    last_seen  timestamptz NOT NULL
);
