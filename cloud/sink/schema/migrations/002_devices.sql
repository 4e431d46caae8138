-- Device health from the heartbeats (the retained {prefix}/{device}/status
-- messages the forwarder relays to the compacted status topic). The
-- heartbeat is kept as received, in jsonb: a newer agent may add fields
-- and they are here at once; the views pick out what the dashboards show.

-- The latest heartbeat of every device that ever sent one.
CREATE TABLE devices (
    device_id    text        PRIMARY KEY,
    state        text        NOT NULL,
    status       jsonb       NOT NULL,
    heard_at     timestamptz NOT NULL,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    received_at  timestamptz NOT NULL DEFAULT now(),
    kafka_partition integer  NOT NULL,
    kafka_offset    bigint   NOT NULL
);

COMMENT ON TABLE devices IS 'Latest heartbeat per device, written by cloud-forwarder sink from the status topic.';
COMMENT ON COLUMN devices.status IS 'The heartbeat as the device sent it (docs/DESIGN.md, "The heartbeat").';
COMMENT ON COLUMN devices.heard_at IS 'When the device last spoke: the forwarder''s receive time of a live heartbeat; for a retained copy replayed to a forwarder, the heartbeat''s own ts (never later than the relay).';
COMMENT ON COLUMN devices.received_at IS 'When the sink stored the row.';

-- Every heartbeat, for history; deleted after SINK_RETENTION like readings.
CREATE TABLE device_status (
    device_id    text        NOT NULL,
    heard_at     timestamptz NOT NULL,
    state        text        NOT NULL,
    status       jsonb       NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    kafka_partition integer  NOT NULL,
    kafka_offset    bigint   NOT NULL,
    -- A record consumed twice (at-least-once) is one row.
    PRIMARY KEY (device_id, kafka_partition, kafka_offset)
);

COMMENT ON TABLE device_status IS 'Every heartbeat received, one row per status-topic record; deleted after SINK_RETENTION.';

CREATE INDEX device_status_device_heard ON device_status (device_id, heard_at);
CREATE INDEX device_status_received_brin ON device_status USING brin (received_at);

-- Safe accessors: a field of the wrong JSON type reads as NULL (or an empty
-- object or array) instead of failing every query over the fleet.
CREATE FUNCTION status_num(j jsonb) RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN jsonb_typeof(j) = 'number' THEN j::double precision END $$;
CREATE FUNCTION status_bool(j jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN jsonb_typeof(j) = 'boolean' THEN j::boolean END $$;
CREATE FUNCTION status_obj(j jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN jsonb_typeof(j) = 'object' THEN j ELSE '{}'::jsonb END $$;
CREATE FUNCTION status_arr(j jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN jsonb_typeof(j) = 'array' THEN j ELSE '[]'::jsonb END $$;
-- Unix seconds to a time; NULL outside 2000..2200.
CREATE FUNCTION status_time(j jsonb) RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN status_num(j) BETWEEN 946684800 AND 7258118400 THEN to_timestamp(status_num(j)) END $$;

-- One row per device with the heartbeat's fields as columns. interval_s is
-- the device's own status_interval when its heartbeat carries one, else the
-- default 60 s; reporting is false once 3 intervals passed without a word.
CREATE VIEW fleet_devices AS
SELECT d.device_id,
       d.state,
       d.status->>'agent'                                   AS agent_version,
       d.status->'config'->>'version'                       AS config_version,
       d.status->'config'->>'source'                        AS config_source,
       d.heard_at                                           AS last_seen,
       s.interval_s,
       d.heard_at >= now() - make_interval(secs => 3 * s.interval_s) AS reporting,
       status_bool(d.status->'clock'->'synced')              AS clock_synced,
       status_num(d.status->'clock'->'step')       AS clock_step_s,
       d.status->>'delivery'                                AS delivery,
       status_num(d.status->'buffer'->'readings')            AS buffer_readings,
       status_num(d.status->'buffer'->'bytes')               AS buffer_bytes,
       status_num(d.status->'buffer'->'oldest_age')          AS oldest_age_s,
       status_num(d.status->'buffer'->'held')                AS held,
       status_num(d.status->'buffer'->'unconfirmed')         AS unconfirmed,
       status_num(d.status->'buffer'->'unconfirmed_age')     AS unconfirmed_age_s,
       (SELECT coalesce(sum(status_num(v)), 0) FROM jsonb_each(status_obj(d.status->'buffer'->'drops')) AS x(k, v)) AS drops,
       status_num(d.status->'buffer'->'damaged')             AS damaged,
       status_num(d.status->'buffer'->'disk_free')           AS disk_free,
       status_num(d.status->'host'->'temp_c')      AS cpu_temp_c,
       ARRAY(SELECT jsonb_array_elements_text(status_arr(d.status->'host'->'throttle'->'now')))        AS throttle_now,
       ARRAY(SELECT jsonb_array_elements_text(status_arr(d.status->'host'->'throttle'->'since_boot'))) AS throttle_since_boot,
       (SELECT count(*) FROM jsonb_each(status_obj(d.status->'sensors')) AS x(k, v) WHERE v->>'state' = 'failing') AS failing_sensors,
       d.first_seen,
       d.received_at
FROM devices d
CROSS JOIN LATERAL (
    SELECT CASE WHEN status_num(d.status->'status_interval') BETWEEN 1 AND 86400
                 THEN status_num(d.status->'status_interval') ELSE 60 END AS interval_s
) s;

-- Devices silent for 3 of their status intervals (order by silent_for).
CREATE VIEW devices_not_reporting AS
SELECT device_id, state, last_seen, now() - last_seen AS silent_for, interval_s, agent_version
FROM fleet_devices
WHERE NOT reporting;

-- How many devices run each agent version (and how many of them report).
CREATE VIEW fleet_versions AS
SELECT coalesce(agent_version, 'unknown') AS agent_version,
       count(*)                           AS devices,
       count(*) FILTER (WHERE reporting AND state = 'online') AS online
FROM fleet_devices
GROUP BY 1;

-- Every device's backlog: what waits in its buffer and how old it is.
CREATE VIEW device_backlogs AS
SELECT device_id, state, reporting, buffer_readings, buffer_bytes, oldest_age_s,
       unconfirmed, unconfirmed_age_s, held, drops, disk_free
FROM fleet_devices
WHERE buffer_readings IS NOT NULL;

-- Devices whose clock is not set by NTP (their readings' times are held or
-- uncertain).
CREATE VIEW devices_unsynced_clock AS
SELECT device_id, state, reporting, last_seen, held, agent_version
FROM fleet_devices
WHERE clock_synced IS FALSE;

-- Sensors failing now, one row per device and sensor.
CREATE VIEW failing_sensors AS
SELECT d.device_id,
       x.sensor,
       status_num(x.h->'fails')                AS fails,
       x.h->>'err_class'                       AS err_class,
       x.h->>'err'                             AS err,
       status_time(x.h->'err_at')    AS err_at,
       status_time(x.h->'last_good') AS last_good,
       d.heard_at                              AS last_seen
FROM devices d
CROSS JOIN LATERAL jsonb_each(status_obj(d.status->'sensors')) AS x(sensor, h)
WHERE x.h->>'state' = 'failing';

-- Pis that run hot (70 °C and over; the firmware throttles from 80 °C,
-- 60 °C with a soft limit set) or whose firmware reports under-voltage,
-- throttling or a capped frequency now or since boot.
CREATE VIEW devices_hot_or_throttled AS
SELECT device_id, state, reporting, cpu_temp_c, throttle_now, throttle_since_boot, last_seen
FROM fleet_devices
WHERE cpu_temp_c >= 70 OR cardinality(throttle_now) > 0 OR cardinality(throttle_since_boot) > 0;
