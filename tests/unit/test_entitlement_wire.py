from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from meterd.http.entitlement_wire import plain


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("1000.00000000000000", "1000"),
        ("0E-14", "0"),
        ("1E+3", "1000"),
        ("250.29999999999998", "250.29999999999998"),
        ("250.300", "250.3"),
        ("-0.5", "-0.5"),
    ],
)
def test_decimals_are_written_plainly(value: str, text: str) -> None:
    encoded = msgspec.json.Encoder(decimal_format="number").encode(plain(Decimal(value)))
    assert encoded.decode() == text
