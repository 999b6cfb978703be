"""Standard Webhooks signatures (https://www.standardwebhooks.com): what a receiver verifies with
`standardwebhooks.Webhook(secret).verify(body, headers)` or Svix's libraries."""

from __future__ import annotations

from datetime import datetime
from math import floor

from standardwebhooks.webhooks import Webhook


def signature_headers(secret: str, message_id: str, at: datetime, body: bytes) -> dict[str, str]:
    """webhook-id / -timestamp / -signature, and the same under the svix- names OpenMeter's deliveries
    (sent through Svix) carried, so receivers written for either verify unchanged."""
    signature = Webhook(secret).sign(message_id, at, body.decode())
    timestamp = str(floor(at.timestamp()))
    return {
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature,
        "svix-id": message_id,
        "svix-timestamp": timestamp,
        "svix-signature": signature,
    }
