"""What a caller sends to create or replace a channel or a rule, and the checks that apply to it. Each
`validate()` reports every problem at once, with the API's field names."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import urlsplit

from meterd.core.errors import ProblemCollector
from meterd.notifications.model import BALANCE_THRESHOLD, INVOICE_TYPES, RULE_TYPES, THRESHOLD_TYPES, WEBHOOK, Threshold

MAX_CHANNELS_PER_RULE = 5
MAX_THRESHOLDS_PER_RULE = 10
MAX_THRESHOLD_VALUE = Decimal("1e15")
SECRET_RE = re.compile(r"^(whsec_)?[a-zA-Z0-9+/=]{32,100}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers the worker sets itself: a channel may not replace them.
RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "user-agent", "transfer-encoding", "connection"}
)
_RESERVED_PREFIXES = ("webhook-", "svix-")


def new_signing_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_problem(secret: str) -> str | None:
    if not SECRET_RE.match(secret):
        return "must match ^(whsec_)?[a-zA-Z0-9+/=]{32,100}$"
    raw = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(raw + "==")  # what standardwebhooks does with it
    except (binascii.Error, ValueError):
        return "must be base64 (the signing key, optionally prefixed with whsec_)"
    return None if key else "must not decode to an empty key"


def _check_name(problems: ProblemCollector, name: str) -> None:
    if not name.strip() or len(name) > 256:
        problems.add("name", "must be 1-256 characters, not only spaces")


def _check_metadata(problems: ProblemCollector, metadata: Mapping[str, str]) -> None:
    for key in metadata:
        if not key or len(key) > 256:
            problems.add("metadata", "keys must be 1-256 characters")
            return


@dataclass
class ChannelInput:
    type: str
    name: str
    url: str
    custom_headers: dict[str, str] = field(default_factory=dict)
    signing_secret: str | None = None  # None: generate one (create) or keep the current one (replace)
    disabled: bool = False
    metadata: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        problems = ProblemCollector()
        if self.type != WEBHOOK:
            problems.add("type", f"must be {WEBHOOK} (the only channel type)")
        _check_name(problems, self.name)
        parts = urlsplit(self.url) if len(self.url) <= 2048 else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            problems.add("url", "must be an absolute http(s) URL of at most 2048 characters")
        for name, value in self.custom_headers.items():
            where = f"customHeaders.{name}"
            if not _HEADER_NAME.match(name):
                problems.add(where, "is not a valid HTTP header name")
            elif name.lower() in RESERVED_HEADERS or name.lower().startswith(_RESERVED_PREFIXES):
                problems.add(where, "is set by meterd and cannot be overridden")
            if any(c in value for c in "\r\n\0"):
                problems.add(where, "must not contain CR, LF or NUL")
        if self.signing_secret is not None:
            message = secret_problem(self.signing_secret)
            if message:
                problems.add("signingSecret", message)
        _check_metadata(problems, self.metadata)
        problems.raise_if_any()


@dataclass
class RuleInput:
    type: str
    name: str
    channels: list[str]
    features: list[str] = field(default_factory=list)
    thresholds: list[Threshold] | None = None
    disabled: bool = False
    metadata: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        problems = ProblemCollector()
        if self.type in INVOICE_TYPES:
            problems.add("type", f"{self.type} rules need invoicing, which meterd does not do yet")
        elif self.type not in RULE_TYPES:
            problems.add("type", f"must be one of {', '.join(RULE_TYPES)}")
        _check_name(problems, self.name)
        if not 1 <= len(self.channels) <= MAX_CHANNELS_PER_RULE:
            problems.add("channels", f"must name 1-{MAX_CHANNELS_PER_RULE} channels")
        if len(set(self.channels)) != len(self.channels):
            problems.add("channels", "must not repeat a channel")
        for index, feature in enumerate(self.features):
            if not feature or len(feature) > 64:
                problems.add(f"features[{index}]", "must be a feature id or key (1-64 characters)")
        if self.type == BALANCE_THRESHOLD:
            self._check_thresholds(problems)
        elif self.thresholds:
            problems.add("thresholds", f"only {BALANCE_THRESHOLD} rules have thresholds")
        _check_metadata(problems, self.metadata)
        problems.raise_if_any()

    def _check_thresholds(self, problems: ProblemCollector) -> None:
        thresholds = self.thresholds or []
        if not 1 <= len(thresholds) <= MAX_THRESHOLDS_PER_RULE:
            problems.add("thresholds", f"must have 1-{MAX_THRESHOLDS_PER_RULE} thresholds", "required")
        for index, threshold in enumerate(thresholds):
            where = f"thresholds[{index}]"
            if threshold.type not in THRESHOLD_TYPES:
                problems.add(f"{where}.type", f"must be one of {', '.join(THRESHOLD_TYPES)}")
                continue
            value = threshold.value
            if not value.is_finite() or abs(value) > MAX_THRESHOLD_VALUE:
                problems.add(f"{where}.value", "must be a finite number of at most 1e15")
            elif threshold.kind == "balance" and value < 0:
                problems.add(f"{where}.value", "must be 0 or more")
            elif threshold.kind == "usage" and value <= 0:
                problems.add(f"{where}.value", "must be greater than 0")
        keys = [(t.canonical_type, t.value) for t in thresholds if t.type in THRESHOLD_TYPES and t.value.is_finite()]
        if len(set(keys)) != len(keys):
            problems.add("thresholds", "must not repeat a threshold")
