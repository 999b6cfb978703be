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


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2025-W01-1T00:00Z"])
def test_times_outside_years_1_to_9999_in_utc_are_400s_naming_the_field(moment: str) -> None:
    """These overflowed in astimezone(UTC) and answered 500."""
    from meterd.core.errors import ValidationError
    from meterd.http.entitlement_wire import EntitlementBody, GrantBody, entitlement_input, grant_input

    body = EntitlementBody(type="metered", featureKey="f", measureUsageFrom=moment)
    with pytest.raises(ValidationError) as info:
        entitlement_input(body, v2=True)
    assert [p.field for p in info.value.problems] == ["measureUsageFrom"]
    if "W" not in moment:
        grant = msgspec.json.decode(f'{{"amount": 1, "effectiveAt": "{moment}"}}', type=GrantBody)
        with pytest.raises(ValidationError) as info:
            grant_input(grant)
        assert [p.field for p in info.value.problems] == ["effectiveAt"]
