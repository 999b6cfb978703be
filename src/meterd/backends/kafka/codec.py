"""The Kafka message of one event. Key: `namespace NUL source NUL id`, so retries of an event land on the
same partition. Value: JSON (readable with any Kafka tool), times in microseconds since the epoch (UTC)."""

from __future__ import annotations

import msgspec

from meterd.ingest.events import EventRecord


class WireEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    namespace: str
    id: str
    source: str
    type: str
    subject: str
    time: int
    ingestedAt: int
    data: msgspec.Raw = msgspec.Raw(b"null")


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(WireEvent)


def message_key(namespace: str, source: str, id_: str) -> bytes:
    return f"{namespace}\0{source}\0{id_}".encode()


def encode(namespace: str, event: EventRecord, ingested_us: int) -> bytes:
    return _encoder.encode(
        WireEvent(
            namespace,
            event.id,
            event.source,
            event.type,
            event.subject,
            event.time_us,
            ingested_us,
            msgspec.Raw(event.data),
        )
    )


def decode(value: bytes) -> WireEvent:
    """Raises msgspec.DecodeError (or ValidationError) for a message meterd did not write."""
    return _decoder.decode(value)
