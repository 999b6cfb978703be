-- event store: database meterd on a single server
CREATE DATABASE IF NOT EXISTS meterd;

CREATE TABLE IF NOT EXISTS meterd.events
(
    namespace LowCardinality(String),
    type LowCardinality(String),
    subject String,
    time DateTime64(6, 'UTC'),
    id String,
    source String,
    data String,
    ingested_at DateTime64(6, 'UTC'),
    stored_at DateTime64(6, 'UTC') DEFAULT now64(6),
    seq UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (namespace, type, subject, time)
SETTINGS non_replicated_deduplication_window = 10000, fsync_after_insert = 1, fsync_part_directory = 1;

-- rollup builds and whether they are ready
CREATE TABLE IF NOT EXISTS meterd.rollup_state
(
    meter_id String,
    hash String,
    build String,
    ready UInt8,
    at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(at)
ORDER BY meter_id;

-- rollup of meter tokens_total (01JQ3ZP4WGKVE9T2S6B8N5M7XA, SUM), build ade99f6844
CREATE TABLE IF NOT EXISTS meterd.rollup_01jq3zp4wgkve9t2s6b8n5m7xa_ade99f6844
(
    namespace LowCardinality(String),
    subject String,
    bucket DateTime('UTC'),
    g0 String,
    g1 String,
    rows SimpleAggregateFunction(sum, UInt64),
    first SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
    last SimpleAggregateFunction(max, DateTime64(6, 'UTC')),
    value AggregateFunction(sum, Nullable(Float64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (namespace, subject, bucket, g0, g1)
SETTINGS non_replicated_deduplication_window = 10000, fsync_after_insert = 1, fsync_part_directory = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS meterd.rollup_01jq3zp4wgkve9t2s6b8n5m7xa_ade99f6844_mv TO meterd.rollup_01jq3zp4wgkve9t2s6b8n5m7xa_ade99f6844 AS
SELECT namespace, subject, toDateTime(toStartOfHour(time), 'UTC') AS bucket, JSON_VALUE(data, '$.model') AS g0, JSON_VALUE(data, '$.type') AS g1, count() AS rows, min(time) AS first, max(time) AS last, sumState(ifNotFinite(toFloat64OrNull(JSON_VALUE(data, '$.tokens')), NULL)) AS value
FROM meterd.events
WHERE namespace = 'default' AND type = 'prompt' AND seq > 0
GROUP BY namespace, subject, bucket, g0, g1;

INSERT INTO meterd.rollup_01jq3zp4wgkve9t2s6b8n5m7xa_ade99f6844
SELECT namespace, subject, toDateTime(toStartOfHour(time), 'UTC') AS bucket, JSON_VALUE(data, '$.model') AS g0, JSON_VALUE(data, '$.type') AS g1, count() AS rows, min(time) AS first, max(time) AS last, sumState(ifNotFinite(toFloat64OrNull(JSON_VALUE(data, '$.tokens')), NULL)) AS value
FROM meterd.events
WHERE namespace = 'default' AND type = 'prompt' AND seq <= 0
GROUP BY namespace, subject, bucket, g0, g1;

-- rollup of meter api_requests (01JQ3ZP4WGKVE9T2S6B8N5M7XB, COUNT), build 0224cc47f1
CREATE TABLE IF NOT EXISTS meterd.rollup_01jq3zp4wgkve9t2s6b8n5m7xb_0224cc47f1
(
    namespace LowCardinality(String),
    subject String,
    bucket DateTime('UTC'),
    rows SimpleAggregateFunction(sum, UInt64),
    first SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
    last SimpleAggregateFunction(max, DateTime64(6, 'UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (namespace, subject, bucket)
SETTINGS non_replicated_deduplication_window = 10000, fsync_after_insert = 1, fsync_part_directory = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS meterd.rollup_01jq3zp4wgkve9t2s6b8n5m7xb_0224cc47f1_mv TO meterd.rollup_01jq3zp4wgkve9t2s6b8n5m7xb_0224cc47f1 AS
SELECT namespace, subject, toDateTime(toStartOfHour(time), 'UTC') AS bucket, count() AS rows, min(time) AS first, max(time) AS last
FROM meterd.events
WHERE namespace = 'default' AND type = 'request' AND seq > 0
GROUP BY namespace, subject, bucket;

INSERT INTO meterd.rollup_01jq3zp4wgkve9t2s6b8n5m7xb_0224cc47f1
SELECT namespace, subject, toDateTime(toStartOfHour(time), 'UTC') AS bucket, count() AS rows, min(time) AS first, max(time) AS last
FROM meterd.events
WHERE namespace = 'default' AND type = 'request' AND seq <= 0
GROUP BY namespace, subject, bucket;
