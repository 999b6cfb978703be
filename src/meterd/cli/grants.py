"""`meterd grants`: amounts of a metered feature a customer may use, through OpenMeter's v2 grant routes (and
`DELETE /api/v1/grants/{id}` to void, which has no v2 twin)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import click

from meterd.cli.remote import (
    AMOUNT,
    TIME,
    api_session,
    columns,
    echo_json,
    entitlement_path,
    expiration,
    json_flag,
    metadata_option,
    pairs,
    print_table,
    segment,
    server,
    show,
)

__all__ = ["grants"]

# -- grants -------------------------------------------------------------------------------------------

_GRANT = columns(
    "id",
    "amount",
    "priority",
    "effectiveAt",
    "expiresAt",
    "minRolloverAmount",
    "maxRolloverAmount",
    "recurrence.interval",
    "nextRecurrence",
    "voidedAt",
    "entitlementId",
)
_GRANT_ROW = columns(
    "id",
    "amount",
    "priority",
    ("effective", "effectiveAt"),
    ("expires", "expiresAt"),
    ("min rollover", "minRolloverAmount"),
    ("max rollover", "maxRolloverAmount"),
    ("recurrence", "recurrence.interval"),
    ("voided", "voidedAt"),
)


@click.group()
def grants() -> None:
    """Grants: amounts of a metered feature a customer may use, burnt down by usage."""


@grants.command("list")
@click.option("--customer", help="Only this customer's grants (id or key).")
@click.option("--feature", help="Only grants of this feature (key).")
@click.option("--include-deleted", is_flag=True, help="Also list grants of deleted entitlements.")
@server
@json_flag
def grants_list(
    customer: str | None, feature: str | None, include_deleted: bool, url: str, api_key: str | None, as_json: bool
) -> None:
    """List grants, voided ones included.

    \b
    Examples:
      meterd grants list --customer acme --feature ai_tokens
      meterd grants list --feature ai_tokens
    """
    params = [("includeDeleted", "true")] * include_deleted
    with api_session(url, api_key) as api:
        if customer and feature:
            items = api.all_pages(entitlement_path(customer, feature, "grants"), params)
        else:
            params += [(name, value) for name, value in (("customer", customer), ("feature", feature)) if value]
            items = api.all_pages("/api/v2/grants", params)
    if as_json:
        echo_json(value=items)
    else:
        print_table(items, _GRANT_ROW)


@grants.command("create")
@click.argument("customer")
@click.argument("feature")
@click.option("--amount", type=AMOUNT, required=True, help="How much of the feature, an exact decimal.")
@click.option("--priority", type=click.IntRange(1, 255), help="Lower numbers burn first [default: 1].")
@click.option("--effective-at", type=TIME, help="When it becomes usable [default: the start of this minute].")
@click.option("--expires-in", metavar="DURATION", help="Expire after 12h, 30d, 2w, 1m (months) or 1y [default: never].")
@click.option("--max-rollover", type=AMOUNT, help="At most this much carries over a reset [default: the amount].")
@click.option("--min-rollover", type=AMOUNT, help="At least this much after a reset [default: 0].")
@click.option(
    "--recurrence", metavar="INTERVAL", help="Refill to the amount every DAY, WEEK, MONTH, YEAR or ISO duration."
)
@click.option("--recurrence-anchor", type=TIME, help="When refills happen [default: --effective-at].")
@metadata_option
@server
@json_flag
def grants_create(
    customer: str,
    feature: str,
    amount: Decimal,
    priority: int | None,
    effective_at: str | None,
    expires_in: str | None,
    max_rollover: Decimal | None,
    min_rollover: Decimal | None,
    recurrence: str | None,
    recurrence_anchor: str | None,
    metadata: tuple[str, ...],
    url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Grant CUSTOMER an amount of FEATURE (its entitlement must be metered).

    \b
    Examples: a prepaid top-up of 500,000 that burns after the monthly allowance and lasts a year
      meterd grants create acme ai_tokens --amount 500000 --priority 10 --expires-in 1y
    and a monthly 1,000,000 of which up to 200,000 unused carries into the next month
      meterd grants create acme ai_tokens --amount 1000000 --max-rollover 200000 --expires-in 2m \\
          --effective-at 2026-11-01T00:00:00Z
    """
    start = effective_at or datetime.now(UTC).replace(second=0, microsecond=0).isoformat().replace("+00:00", "Z")
    body: dict[str, Any] = {"amount": amount, "effectiveAt": start, "metadata": pairs(metadata, "--metadata")}
    optional = {"priority": priority, "maxRolloverAmount": max_rollover, "minRolloverAmount": min_rollover}
    body.update({k: v for k, v in optional.items() if v is not None})
    if expires_in:
        body["expiration"] = expiration(expires_in)
    if recurrence:
        body["recurrence"] = {"interval": recurrence, **({"anchor": recurrence_anchor} if recurrence_anchor else {})}
    elif recurrence_anchor:
        raise click.UsageError("--recurrence-anchor needs --recurrence")
    with api_session(url, api_key) as api:
        show(api.send("POST", entitlement_path(customer, feature, "grants"), body), _GRANT, as_json)


@grants.command("void")
@click.argument("grant_id")
@server
def grants_void(grant_id: str, url: str, api_key: str | None) -> None:
    """Void a grant from now on: its remaining balance is gone; usage it already paid for stays paid.

    \b
    Example:
      meterd grants void 01JD3Q8W6ZK1V4X9B2N7M5C0PT
    """
    with api_session(url, api_key) as api:
        api.send("DELETE", f"/api/v1/grants/{segment(grant_id)}")
    click.echo(f"voided grant {grant_id}")
