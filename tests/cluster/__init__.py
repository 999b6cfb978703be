"""Cluster mode: Kafka journal, ClickHouse server event store, PostgreSQL metadata."""
