-- event store: database meterd on cluster meterd_cluster
CREATE DATABASE IF NOT EXISTS meterd ON CLUSTER meterd_cluster;

CREATE TABLE IF NOT EXISTS meterd.events_local ON CLUSTER meterd_cluster
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
ENGINE = ReplicatedMergeTree('/clickhouse/meterd/meterd/shard/{shard}/events_local', '{replica}')
PARTITION BY toYYYYMM(time)
ORDER BY (namespace, type, subject, time)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800, fsync_after_insert = 1, fsync_part_directory = 1;

CREATE TABLE IF NOT EXISTS meterd.events ON CLUSTER meterd_cluster
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
ENGINE = Distributed('meterd_cluster', 'meterd', 'events_local', cityHash64(namespace, subject));

-- rollup builds and whether they are ready
CREATE TABLE IF NOT EXISTS meterd.rollup_state ON CLUSTER meterd_cluster
(
    meter_id String,
    hash String,
    build String,
    ready UInt8,
    at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/meterd/meterd/global/rollup_state', '{shard}-{replica}', at)
ORDER BY meter_id
SETTINGS replicated_deduplication_window = 0;

-- rollup of meter tokens_total (01JQ3ZP4WGKVE9T2S6B8N5M7XA, SUM), build ade99f6844
CREATE TABLE IF NOT EXISTS meterd.rollup_01jq3zp4wgkve9t2s6b8n5m7xa_ade99f6844_local ON CLUSTER meterd_cluster
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
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/meterd/meterd/shard/{shard}/rollup_01jq3zp4wgkve9t2s6b8n5m7xa_ade99f6844_local', '{replica}')
PARTITION BY toYYYYMM(bucket)
ORDER BY (namespace, subject, bucket, g0, g1)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800, fsync_after_insert = 1, fsync_part_directory = 1;

CREATE TABLE IF NOT EXISTS meterd.rollup_01jq3zp4wgkve9t2s6b8n5m7xa_ade99f6844 ON CLUSTER meterd_cluster
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
ENGINE = Distributed('meterd_cluster', 'meterd', 'rollup_01jq3zp4wgkve9t2s6b8n5m7xa_ade99f6844_local', cityHash64(namespace, subject));

SYSTEM SYNC REPLICA ON CLUSTER meterd_cluster meterd.events_local LIGHTWEIGHT;

CREATE MATERIALIZED VIEW IF NOT EXISTS meterd.rollup_01jq3zp4wgkve9t2s6b8n5m7xa_ade99f6844_mv ON CLUSTER meterd_cluster TO meterd.rollup_01jq3zp4wgkve9t2s6b8n5m7xa_ade99f6844_local AS
SELECT namespace, subject, toDateTime(toStartOfHour(time), 'UTC') AS bucket, JSON_VALUE(data, '$.model') AS g0, JSON_VALUE(data, '$.type') AS g1, count() AS rows, min(time) AS first, max(time) AS last, sumState(ifNotFinite(toFloat64OrNull(JSON_VALUE(data, '$.tokens')), NULL)) AS value
FROM meterd.events_local
WHERE namespace = 'default' AND type = 'prompt' AND seq > 0
GROUP BY namespace, subject, bucket, g0, g1;

INSERT INTO meterd.rollup_01jq3zp4wgkve9t2s6b8n5m7xa_ade99f6844 SETTINGS parallel_distributed_insert_select = 2
SELECT namespace, subject, toDateTime(toStartOfHour(time), 'UTC') AS bucket, JSON_VALUE(data, '$.model') AS g0, JSON_VALUE(data, '$.type') AS g1, count() AS rows, min(time) AS first, max(time) AS last, sumState(ifNotFinite(toFloat64OrNull(JSON_VALUE(data, '$.tokens')), NULL)) AS value
FROM meterd.events
WHERE namespace = 'default' AND type = 'prompt' AND seq <= 0
GROUP BY namespace, subject, bucket, g0, g1;

-- rollup of meter api_requests (01JQ3ZP4WGKVE9T2S6B8N5M7XB, COUNT), build 0224cc47f1
CREATE TABLE IF NOT EXISTS meterd.rollup_01jq3zp4wgkve9t2s6b8n5m7xb_0224cc47f1_local ON CLUSTER meterd_cluster
(
    namespace LowCardinality(String),
    subject String,
    bucket DateTime('UTC'),
    rows SimpleAggregateFunction(sum, UInt64),
    first SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
    last SimpleAggregateFunction(max, DateTime64(6, 'UTC'))
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/meterd/meterd/shard/{shard}/rollup_01jq3zp4wgkve9t2s6b8n5m7xb_0224cc47f1_local', '{replica}')
PARTITION BY toYYYYMM(bucket)
ORDER BY (namespace, subject, bucket)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800, fsync_after_insert = 1, fsync_part_directory = 1;

CREATE TABLE IF NOT EXISTS meterd.rollup_01jq3zp4wgkve9t2s6b8n5m7xb_0224cc47f1 ON CLUSTER meterd_cluster
(
    namespace LowCardinality(String),
    subject String,
    bucket DateTime('UTC'),
    rows SimpleAggregateFunction(sum, UInt64),
    first SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
    last SimpleAggregateFunction(max, DateTime64(6, 'UTC'))
)
ENGINE = Distributed('meterd_cluster', 'meterd', 'rollup_01jq3zp4wgkve9t2s6b8n5m7xb_0224cc47f1_local', cityHash64(namespace, subject));

SYSTEM SYNC REPLICA ON CLUSTER meterd_cluster meterd.events_local LIGHTWEIGHT;

CREATE MATERIALIZED VIEW IF NOT EXISTS meterd.rollup_01jq3zp4wgkve9t2s6b8n5m7xb_0224cc47f1_mv ON CLUSTER meterd_cluster TO meterd.rollup_01jq3zp4wgkve9t2s6b8n5m7xb_0224cc47f1_local AS
SELECT namespace, subject, toDateTime(toStartOfHour(time), 'UTC') AS bucket, count() AS rows, min(time) AS first, max(time) AS last
FROM meterd.events_local
WHERE namespace = 'default' AND type = 'request' AND seq > 0
GROUP BY namespace, subject, bucket;

INSERT INTO meterd.rollup_01jq3zp4wgkve9t2s6b8n5m7xb_0224cc47f1 SETTINGS parallel_distributed_insert_select = 2
SELECT namespace, subject, toDateTime(toStartOfHour(time), 'UTC') AS bucket, count() AS rows, min(time) AS first, max(time) AS last
FROM meterd.events
WHERE namespace = 'default' AND type = 'request' AND seq <= 0
GROUP BY namespace, subject, bucket;
