"""`meterd entitlements` (and the registration of `meterd features` and `meterd grants`): customers' access to
features, their balances, history and resets, through OpenMeter's customer-scoped v2 API. `access` uses
`GET /api/v1/customers/{c}/access`, which has no v2 twin."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import click

from meterd.cli.features import features
from meterd.cli.grants import grants
from meterd.cli.remote import (
    AMOUNT,
    TIME,
    api_session,
    columns,
    decode,
    echo_json,
    entitlement_path,
    json_flag,
    metadata_option,
    pairs,
    print_record,
    print_table,
    segment,
    server,
    show,
)

__all__ = ["entitlements", "register"]


def register(cli: click.Group) -> None:
    cli.add_command(features)
    cli.add_command(entitlements)
    cli.add_command(grants)


# -- entitlements -------------------------------------------------------------------------------------

_ENTITLEMENT = columns(
    "customerKey",
    "featureKey",
    "type",
    "usagePeriod.interval",
    "usagePeriod.anchor",
    "currentUsagePeriod.from",
    "currentUsagePeriod.to",
    "measureUsageFrom",
    "isSoftLimit",
    "issueAfterReset",
    "issueAfterResetPriority",
    "preserveOverageAtReset",
    "config",
    "id",
    "customerId",
    "createdAt",
    "deletedAt",
)
_ENTITLEMENT_ROW = columns(
    ("customer", "customerKey"),
    ("feature", "featureKey"),
    "type",
    ("period", "usagePeriod.interval"),
    ("period start", "currentUsagePeriod.from"),
    ("soft limit", "isSoftLimit"),
    "id",
)
_VALUE = columns("hasAccess", "balance", "usage", "overage", "totalAvailableGrantAmount", "config")


@click.group()
def entitlements() -> None:
    """Entitlements: a customer's access to a feature (metered with a balance, boolean, or static config)."""


@entitlements.command("list")
@click.option("--customer", help="Only this customer's (id or key); default: every customer's.")
@click.option("--feature", multiple=True, help="Only entitlements to this feature (key or id, repeatable).")
@click.option("--include-deleted", is_flag=True, help="Also list deleted entitlements (with --customer).")
@server
@json_flag
def entitlements_list(
    customer: str | None,
    feature: tuple[str, ...],
    include_deleted: bool,
    url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """List entitlements.

    \b
    Example:
      meterd entitlements list --customer acme
    """
    with api_session(url, api_key) as api:
        if customer:
            params = [("includeDeleted", "true")] * include_deleted
            items = api.all_pages(f"/api/v2/customers/{segment(customer)}/entitlements", params)
            items = [i for i in items if not feature or i["featureKey"] in feature or i["featureId"] in feature]
        else:
            items = api.all_pages("/api/v2/entitlements", [("feature", f) for f in feature])
    if as_json:
        echo_json(value=items)
    else:
        print_table(items, _ENTITLEMENT_ROW)


def _measure_from(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None or value.upper() in ("NOW", "CURRENT_PERIOD_START"):
        return value.upper() if value else None
    return TIME.convert(value, param, ctx)


@entitlements.command("create")
@click.argument("customer")
@click.option("--feature", required=True, help="Feature key or id.")
@click.option(
    "--type", "type_", type=click.Choice(["metered", "boolean", "static"]), default="metered", show_default=True
)
@click.option(
    "--period", help="Usage period: DAY, WEEK, MONTH, YEAR or an ISO 8601 duration such as P2W (metered: required)."
)
@click.option(
    "--anchor",
    type=TIME,
    help="When periods start, e.g. 2026-01-01T00:00:00Z [default: a --measure-from time, else now].",
)
@click.option(
    "--measure-from",
    callback=_measure_from,
    help="When usage starts to count: CURRENT_PERIOD_START, NOW or a time [default: now, to the minute].",
)
@click.option("--soft-limit", is_flag=True, help="Keep access when the balance is used up (usage becomes overage).")
@click.option("--issue-after-reset", type=AMOUNT, help="A grant of this amount, refilled at every period start.")
@click.option("--issue-priority", type=click.IntRange(1, 255), help="Priority of that refill grant [default: 1].")
@click.option("--preserve-overage", is_flag=True, help="Overage at a reset is paid from the next period's balance.")
@click.option("--config", help="Static entitlements: the config, a JSON object, e.g. '{\"seats\": 5}'.")
@metadata_option
@server
@json_flag
def entitlements_create(
    customer: str,
    feature: str,
    type_: str,
    period: str | None,
    anchor: str | None,
    measure_from: str | None,
    soft_limit: bool,
    issue_after_reset: Decimal | None,
    issue_priority: int | None,
    preserve_overage: bool,
    config: str | None,
    metadata: tuple[str, ...],
    url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Give CUSTOMER (id or key) an entitlement to a feature.

    \b
    Examples:
      meterd entitlements create acme --feature ai_tokens --period MONTH --anchor 2026-01-01T00:00:00Z \\
          --measure-from CURRENT_PERIOD_START --issue-after-reset 1000000
      meterd entitlements create acme --feature sso --type boolean
      meterd entitlements create acme --feature seats --type static --config '{"seats": 5}'
    """
    body: dict[str, Any] = {"type": type_, "featureKey": feature, "metadata": pairs(metadata, "--metadata")}
    if period:
        body["usagePeriod"] = {"interval": period, **({"anchor": anchor} if anchor else {})}
    elif anchor:
        raise click.UsageError("--anchor needs --period")
    if measure_from:
        body["measureUsageFrom"] = measure_from
    if type_ == "metered":
        body.update(isSoftLimit=soft_limit, preserveOverageAtReset=preserve_overage)
    if issue_after_reset is not None:  # v2's spelling of issueAfterReset and issueAfterResetPriority
        body["issue"] = {"amount": issue_after_reset, **({"priority": issue_priority} if issue_priority else {})}
    elif issue_priority is not None:
        raise click.UsageError("--issue-priority needs --issue-after-reset")
    if config is not None:
        body["config"] = config
    with api_session(url, api_key) as api:
        show(api.send("POST", f"/api/v2/customers/{segment(customer)}/entitlements", body), _ENTITLEMENT, as_json)


@entitlements.command("get")
@click.argument("customer")
@click.argument("feature")
@server
@json_flag
def entitlements_get(customer: str, feature: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Show CUSTOMER's entitlement to FEATURE (a feature key, or an entitlement id).

    \b
    Example:
      meterd entitlements get acme ai_tokens
    """
    with api_session(url, api_key) as api:
        show(api.get(entitlement_path(customer, feature)), _ENTITLEMENT, as_json)


@entitlements.command("delete")
@click.argument("customer")
@click.argument("feature")
@server
def entitlements_delete(customer: str, feature: str, url: str, api_key: str | None) -> None:
    """Delete CUSTOMER's entitlement to FEATURE; its history before now still answers.

    \b
    Example:
      meterd entitlements delete acme ai_tokens
    """
    with api_session(url, api_key) as api:
        api.send("DELETE", entitlement_path(customer, feature))
    click.echo(f"deleted {customer}'s entitlement to {feature}")


@entitlements.command("value")
@click.argument("customer")
@click.argument("feature")
@click.option("--at", type=TIME, help="The value at this time [default: now] (ceiled to the minute).")
@server
@json_flag
def entitlements_value(
    customer: str, feature: str, at: str | None, url: str, api_key: str | None, as_json: bool
) -> None:
    """Show whether CUSTOMER has access to FEATURE, and the balance, usage and overage of this period, with
    each active grant's balance.

    \b
    Examples:
      meterd entitlements value acme ai_tokens
      meterd entitlements value acme ai_tokens --at 2026-10-31T23:59:00Z
    """
    with api_session(url, api_key) as api:
        response = api.get(entitlement_path(customer, feature, "value"), {"time": at} if at else None)
    if as_json:
        echo_json(response)
        return
    value = decode(response)
    per_grant = [(f"grant {grant}", _grant_balance(grant)) for grant in value.get("grantBalances") or {}]
    print_record(value, [*_VALUE, *per_grant])


def _grant_balance(grant: str) -> Callable[[dict[str, Any]], Any]:
    return lambda value: value["grantBalances"][grant]


@entitlements.command("access")
@click.argument("customer")
@server
@json_flag
def entitlements_access(customer: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Show CUSTOMER's current value for every feature it is entitled to.

    \b
    Example:
      meterd entitlements access acme
    """
    with api_session(url, api_key) as api:
        response = api.get(f"/api/v1/customers/{segment(customer)}/access")
    if as_json:
        echo_json(response)
        return
    rows = [{"feature": key, **value} for key, value in sorted(decode(response)["entitlements"].items())]
    access = columns(
        "feature",
        ("access", "hasAccess"),
        "balance",
        "usage",
        "overage",
        ("total available", "totalAvailableGrantAmount"),
        "config",
    )
    print_table(rows, access)


@entitlements.command("history")
@click.argument("customer")
@click.argument("feature")
@click.option("--window", required=True, type=click.Choice(["MINUTE", "HOUR", "DAY"], case_sensitive=False))
@click.option("--from", "from_", type=TIME, help="Start [default: the current period's start].")
@click.option("--to", type=TIME, help="End [default: now].")
@click.option("--tz", help="IANA time zone for the windows, e.g. Europe/Budapest [default: UTC].")
@server
@json_flag
def entitlements_history(
    customer: str,
    feature: str,
    window: str,
    from_: str | None,
    to: str | None,
    tz: str | None,
    url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Show usage per window and how grants burnt down, for a metered entitlement.

    Windows without usage are left out. The burn-down has one row per phase (between resets, grant
    activations, expiries and recurrences) with the usage each grant paid for.

    \b
    Example:
      meterd entitlements history acme ai_tokens --window DAY --from 2026-10-01T00:00:00Z --tz Europe/Berlin
    """
    params = {"windowSize": window.upper(), "from": from_, "to": to, "windowTimeZone": tz}
    with api_session(url, api_key) as api:
        response = api.get(entitlement_path(customer, feature, "history"), {k: v for k, v in params.items() if v})
    if as_json:
        echo_json(response)
        return
    body = decode(response)
    window_columns = columns(
        ("from", "period.from"), ("to", "period.to"), "usage", ("balance at start", "balanceAtStart")
    )
    print_table(body["windowedHistory"], window_columns, "usage")
    burndown = columns(
        ("from", "period.from"),
        ("to", "period.to"),
        "usage",
        "overage",
        ("balance at start", "balanceAtStart"),
        ("balance at end", "balanceAtEnd"),
    )
    by_grant = ("usage by grant", lambda row: {u["grantId"]: u["usage"] for u in row["grantUsages"]})
    print_table(body["burndownHistory"], [*burndown, by_grant], "burn-down")


@entitlements.command("reset")
@click.argument("customer")
@click.argument("feature")
@click.option("--at", type=TIME, help="When the new period starts [default: now]; not in the future.")
@click.option("--retain-anchor", is_flag=True, help="Keep the period anchor (else later periods start from --at).")
@click.option(
    "--preserve-overage/--no-preserve-overage",
    default=None,
    help="Pay this period's overage from the next balance [default: the entitlement's setting].",
)
@server
def entitlements_reset(
    customer: str,
    feature: str,
    at: str | None,
    retain_anchor: bool,
    preserve_overage: bool | None,
    url: str,
    api_key: str | None,
) -> None:
    """Start a new usage period now (or at --at): usage restarts at 0 and grants roll over.

    \b
    Example:
      meterd entitlements reset acme ai_tokens --retain-anchor
    """
    body: dict[str, Any] = {"retainAnchor": retain_anchor}
    if at:
        body["effectiveAt"] = at
    if preserve_overage is not None:
        body["preserveOverage"] = preserve_overage
    with api_session(url, api_key) as api:
        api.send("POST", entitlement_path(customer, feature, "reset"), body)
    click.echo(f"reset {customer}'s entitlement to {feature}" + (f" at {at}" if at else ""))
