-- Aggregates: a device whose buffer filled up (buffer.when_full:
-- downsample) folds its oldest readings into one record per sensor and
-- window, with its own seq: the row's value columns and "values" hold the
-- means, ts the first reading's time, and agg the rest as the device sent
-- it (n, level, to, covers, min, max, per-field count). NULL for a reading.
-- Adding nullable columns without a default changes only the catalog: no
-- table rewrite, and the lock it takes is brief (lock_timeout bounds the
-- wait for it).
ALTER TABLE readings
    ADD COLUMN agg          jsonb,
    ADD COLUMN covers_first bigint,
    ADD COLUMN covers_last  bigint;

COMMENT ON COLUMN readings.agg IS 'For an aggregate (docs/DESIGN.md, "The wire format"): {n, level, to, covers, min, max[, count]}; NULL for a reading.';
COMMENT ON COLUMN readings.covers_first IS 'For an aggregate: the first seq it replaces (those seqs never arrive and are not lost).';
COMMENT ON COLUMN readings.covers_last IS 'For an aggregate: the last seq it replaces.';

-- Few rows (aggregates only): the gap view reads their seq ranges per device.
CREATE INDEX readings_aggregates ON readings (device_id, covers_first, covers_last) WHERE agg IS NOT NULL;

-- Missing seq ranges per device, as before, less the seqs an aggregate
-- accounts for: readings folded into an aggregate are not lost. What is
-- left was dropped by a full buffer past its coarsest level or by max_age,
-- sent to the dead-letter topic, or is still on its way.
CREATE OR REPLACE VIEW device_gaps AS
WITH gaps AS (
    SELECT device_id,
           prev_seq + 1 AS first_missing,
           seq - 1      AS last_missing,
           prev_ts, ts
    FROM (
        SELECT device_id, seq, ts,
               lag(seq) OVER w AS prev_seq,
               lag(ts)  OVER w AS prev_ts
        FROM readings
        WINDOW w AS (PARTITION BY device_id ORDER BY seq)
    ) s
    WHERE seq > prev_seq + 1
), covered AS (
    SELECT device_id, range_agg(int8range(covers_first, covers_last, '[]')) AS seqs
    FROM readings
    WHERE agg IS NOT NULL
    GROUP BY device_id
), lost AS (
    SELECT g.device_id, g.prev_ts, g.ts,
           unnest(int8multirange(int8range(g.first_missing, g.last_missing, '[]'))
                  - coalesce(c.seqs, '{}'::int8multirange)) AS r
    FROM gaps g
    LEFT JOIN covered c USING (device_id)
)
SELECT device_id,
       lower(r)            AS first_missing,
       upper(r) - 1        AS last_missing,
       upper(r) - lower(r) AS missing,
       prev_ts             AS after_ts,
       ts                  AS before_ts
FROM lost;

-- Per-minute averages as before; readings counts what the rows stand for
-- (an aggregate counts as its n).
CREATE OR REPLACE VIEW readings_per_minute AS
SELECT date_bin('1 minute', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS minute,
       device_id,
       sensor,
       avg(temperature_c) AS temperature_c,
       avg(humidity_pct)  AS humidity_pct,
       avg(pressure_hpa)  AS pressure_hpa,
       sum(coalesce((agg->>'n')::bigint, 1))::bigint AS readings
FROM readings
GROUP BY 1, 2, 3;

-- Rows that an aggregate of the same sensor also covers: a reading (or a
-- finer aggregate) published before the device folded it, and confirmed
-- after (delivery: kafka). The measurement is then in the table twice,
-- alone and inside the aggregate's mean; a consumer that sums or counts
-- leaves these rows out, or the aggregate. A reading taken before the
-- clock synced is never folded (its time is unknown), even when its seq
-- lies between folded ones.
CREATE VIEW readings_folded AS
SELECT r.device_id, r.seq, r.sensor, r.ts, r.agg IS NOT NULL AS is_aggregate, a.seq AS folded_into
FROM readings a
JOIN readings r
  ON r.device_id = a.device_id AND r.sensor = a.sensor
 AND r.seq BETWEEN a.covers_first AND a.covers_last
 AND r.time_synced
WHERE a.agg IS NOT NULL;
