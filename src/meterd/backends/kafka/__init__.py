"""Cluster mode's ingest journal on Apache Kafka: API nodes produce (journal.py), sinks consume (source.py)."""
