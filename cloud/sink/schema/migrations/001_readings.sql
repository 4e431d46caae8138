-- One row per reading; (device_id, seq) identifies a reading for the
-- device's whole life, so a reading delivered twice is still one row.
CREATE TABLE readings (
    device_id     text             NOT NULL,
    seq           bigint           NOT NULL CHECK (seq > 0),
    sensor        text             NOT NULL,
    kind          text             NOT NULL,
    ts            timestamptz      NOT NULL,
    time_synced   boolean          NOT NULL,
    temperature_c double precision,
    humidity_pct  double precision,
    pressure_hpa  double precision,
    "values"      jsonb            NOT NULL,
    received_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, seq)
);

COMMENT ON TABLE readings IS 'Sensor readings written by cloud-forwarder sink from the Kafka topic, one row per (device_id, seq).';
COMMENT ON COLUMN readings.ts IS 'When the reading was taken (the device''s clock; see time_synced).';
COMMENT ON COLUMN readings.time_synced IS 'False when the device''s clock was not yet set by NTP when it took the reading.';
COMMENT ON COLUMN readings."values" IS 'Every value of the reading, including keys without a column of their own.';
COMMENT ON COLUMN readings.received_at IS 'When the sink committed the row.';

-- "One sensor over time": WHERE device_id = $1 AND sensor = $2 AND ts BETWEEN ...
CREATE INDEX readings_device_sensor_ts ON readings (device_id, sensor, ts);
-- Time windows over every device, and retention. BRIN: rows arrive roughly
-- in time order, so a few kilobytes index millions of rows at almost no
-- cost per insert (a btree here would cost the writer as much as the
-- table itself).
CREATE INDEX readings_ts_brin ON readings USING brin (ts);

-- Per-minute averages per device and sensor. A filter on minute, device_id
-- or sensor is applied before the aggregation; readings_device_sensor_ts
-- serves one on device_id (and sensor).
CREATE VIEW readings_per_minute AS
SELECT date_bin('1 minute', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS minute,
       device_id,
       sensor,
       avg(temperature_c) AS temperature_c,
       avg(humidity_pct)  AS humidity_pct,
       avg(pressure_hpa)  AS pressure_hpa,
       count(*)           AS readings
FROM readings
GROUP BY 1, 2, 3;

-- The newest reading (by ts) of every device and sensor. A loose index scan
-- over readings_device_sensor_ts: one index probe per pair, not a scan of
-- the table.
CREATE VIEW latest_readings AS
WITH RECURSIVE pairs AS (
    (SELECT device_id, sensor FROM readings ORDER BY device_id, sensor LIMIT 1)
    UNION ALL
    SELECT n.device_id, n.sensor
    FROM pairs p
    CROSS JOIN LATERAL (
        SELECT r.device_id, r.sensor FROM readings r
        WHERE (r.device_id, r.sensor) > (p.device_id, p.sensor)
        ORDER BY r.device_id, r.sensor LIMIT 1
    ) n
)
SELECT l.device_id, l.sensor, l.kind, l.seq, l.ts, l.time_synced,
       l.temperature_c, l.humidity_pct, l.pressure_hpa, l."values", l.received_at
FROM pairs p
CROSS JOIN LATERAL (
    SELECT * FROM readings r
    WHERE r.device_id = p.device_id AND r.sensor = p.sensor
    ORDER BY r.ts DESC, r.seq DESC LIMIT 1
) l;

-- When each device was last heard from, from its sensors' newest readings.
CREATE VIEW devices_last_seen AS
SELECT device_id,
       count(*)          AS sensors,
       max(ts)           AS last_ts,
       max(received_at)  AS last_received_at,
       max(seq)          AS last_seq,
       bool_and(time_synced) AS time_synced
FROM latest_readings
GROUP BY device_id;

-- Missing seq ranges per device: readings the device took that are not in
-- the table (dropped by a full buffer, sent to the dead-letter topic, or
-- still on their way). A filter on device_id is applied before the scan.
CREATE VIEW device_gaps AS
SELECT device_id,
       prev_seq + 1         AS first_missing,
       seq - 1              AS last_missing,
       seq - prev_seq - 1   AS missing,
       prev_ts              AS after_ts,
       ts                   AS before_ts
FROM (
    SELECT device_id, seq, ts,
           lag(seq) OVER w AS prev_seq,
           lag(ts)  OVER w AS prev_ts
    FROM readings
    WINDOW w AS (PARTITION BY device_id ORDER BY seq)
) s
WHERE seq > prev_seq + 1;
