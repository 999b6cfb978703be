"""`meterd features`: what customers can be entitled to, on a running server (OpenMeter's /api/v1/features)."""

from __future__ import annotations

from typing import Any

import click

from meterd.cli.remote import (
    api_session,
    columns,
    echo_json,
    json_flag,
    metadata_option,
    pairs,
    print_table,
    segment,
    server,
    show,
)

__all__ = ["features"]

# -- features -----------------------------------------------------------------------------------------

_FEATURE = columns("key", "name", "meterSlug", "meterGroupByFilters", "id", "createdAt", "archivedAt")
_FEATURE_ROW = columns(
    "key", "name", ("meter", "meterSlug"), ("filters", "meterGroupByFilters"), "id", ("archived", "archivedAt")
)


@click.group()
def features() -> None:
    """Features: what a customer can be entitled to (usually a meter, optionally narrowed by group-by values)."""


@features.command("list")
@click.option("--meter", multiple=True, help="Only features of this meter (repeatable).")
@click.option("--include-archived", is_flag=True, help="Also list archived features.")
@server
@json_flag
def features_list(meter: tuple[str, ...], include_archived: bool, url: str, api_key: str | None, as_json: bool) -> None:
    """List features.

    \b
    Example:
      meterd features list --meter tokens_total
    """
    params = [("meterSlug", m) for m in meter] + [("includeArchived", "true")] * include_archived
    with api_session(url, api_key) as api:
        items = api.all_pages("/api/v1/features", params)
    if as_json:
        echo_json(value=items)
    else:
        print_table(items, _FEATURE_ROW)


@features.command("create")
@click.argument("key")
@click.option("--name", help="Display name [default: the key].")
@click.option("--meter", help="Slug of the meter that measures it (needed for metered entitlements).")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="Only usage with this group-by value.")
@metadata_option
@server
@json_flag
def features_create(
    key: str,
    name: str | None,
    meter: str | None,
    filters: tuple[str, ...],
    metadata: tuple[str, ...],
    url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Create a feature.

    \b
    Example: GPT-4o tokens, measured by the tokens_total meter's usage with model=gpt-4o
      meterd features create gpt4o_tokens --name "GPT-4o tokens" --meter tokens_total --filter model=gpt-4o
    """
    body: dict[str, Any] = {"key": key, "name": name or key, "metadata": pairs(metadata, "--metadata")}
    if meter:
        body["meterSlug"] = meter
    if filters:
        body["meterGroupByFilters"] = pairs(filters, "--filter")
    with api_session(url, api_key) as api:
        show(api.send("POST", "/api/v1/features", body), _FEATURE, as_json)


@features.command("get")
@click.argument("feature")
@server
@json_flag
def features_get(feature: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Show a feature by id or key.

    \b
    Example:
      meterd features get gpt4o_tokens
    """
    with api_session(url, api_key) as api:
        show(api.get(f"/api/v1/features/{segment(feature)}"), _FEATURE, as_json)


@features.command("archive")
@click.argument("feature")
@server
def features_archive(feature: str, url: str, api_key: str | None) -> None:
    """Archive a feature by id or key (refused while an entitlement uses it); its key can then be reused.

    \b
    Example:
      meterd features archive gpt4o_tokens
    """
    with api_session(url, api_key) as api:
        api.send("DELETE", f"/api/v1/features/{segment(feature)}")
    click.echo(f"archived feature {feature}")
