"""Client commands: talk to a running meterd over HTTP (METERD_URL, METERD_API_KEY)."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx

_url = click.option(
    "--url",
    envvar="METERD_URL",
    default="http://127.0.0.1:8888",
    show_default=True,
    help="meterd's address (env METERD_URL).",
)
_key = click.option("--api-key", envvar="METERD_API_KEY", default=None, help="API key (env METERD_API_KEY).")
_format = click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)


def _client(url: str, api_key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=60)


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail") or response.text
        except ValueError:
            detail = response.text
        raise click.ClickException(f"{response.status_code}: {detail}")
    return response


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    Console().print(table)


def register(cli: click.Group) -> None:
    cli.add_command(meters)
    cli.add_command(ingest)
    cli.add_command(query)
    cli.add_command(events)


@click.group()
def meters() -> None:
    """List, show and create meters on a running server."""


@meters.command("list")
@_url
@_key
@_format
def meters_list(url: str, api_key: str | None, fmt: str) -> None:
    """List meters."""
    with _client(url, api_key) as http:
        items = _check(http.get("/api/v1/meters")).json()
    if fmt == "json":
        click.echo(json.dumps(items, indent=2))
    else:
        _table(items, ["slug", "aggregation", "eventType", "valueProperty", "groupBy"])


@meters.command("get")
@click.argument("meter")
@_url
@_key
def meters_get(meter: str, url: str, api_key: str | None) -> None:
    """Show one meter as JSON."""
    with _client(url, api_key) as http:
        click.echo(json.dumps(_check(http.get(f"/api/v1/meters/{meter}")).json(), indent=2))


@meters.command("create")
@click.argument("slug")
@click.option("--event-type", required=True, help="CloudEvent type to aggregate.")
@click.option(
    "--aggregation",
    required=True,
    type=click.Choice(["SUM", "COUNT", "UNIQUE_COUNT", "AVG", "MIN", "MAX", "LATEST"]),
)
@click.option("--value-property", help="JSONPath of the value, e.g. $.total_tokens (not for COUNT).")
@click.option("--group-by", multiple=True, metavar="KEY=JSONPATH", help="A group-by, e.g. model=$.model.")
@click.option("--name", help="Display name [default: the slug].")
@_url
@_key
def meters_create(
    slug: str,
    event_type: str,
    aggregation: str,
    value_property: str | None,
    group_by: tuple[str, ...],
    name: str | None,
    url: str,
    api_key: str | None,
) -> None:
    """Create a meter."""
    body: dict[str, Any] = {
        "slug": slug,
        "eventType": event_type,
        "aggregation": aggregation,
        "groupBy": dict(item.split("=", 1) for item in group_by),
    }
    if value_property:
        body["valueProperty"] = value_property
    if name:
        body["name"] = name
    with _client(url, api_key) as http:
        click.echo(json.dumps(_check(http.post("/api/v1/meters", json=body)).json(), indent=2))


def _read_events(path: Path) -> Iterator[dict[str, Any]]:
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from json.loads(stripped)
        return
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise click.ClickException(f"{path}:{number}: not JSON: {exc}") from None


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--batch-size", default=500, show_default=True, help="Events per request.")
@click.option("--source", default="meterd-cli", show_default=True, help="Source for events that lack one.")
@click.option("--retries", default=8, show_default=True, help="Retries per batch (safe: dedup drops repeats).")
@_url
@_key
def ingest(file: Path, batch_size: int, source: str, retries: int, url: str, api_key: str | None) -> None:
    """Send events from FILE (JSON lines or a JSON array; - for stdin) in batches, with a progress bar.

    Events without an id get one here, before the first try, so a retried batch is never counted twice."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    all_events = []
    for event in _read_events(file):
        event.setdefault("specversion", "1.0")
        event.setdefault("id", str(uuid.uuid4()))
        event.setdefault("source", source)
        all_events.append(event)
    columns = (TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with _client(url, api_key) as http, Progress(*columns) as progress:
        task = progress.add_task("ingest", total=len(all_events))
        for start in range(0, len(all_events), batch_size):
            batch = all_events[start : start + batch_size]
            _send(http, batch, retries)
            progress.advance(task, len(batch))
    click.echo(f"sent {len(all_events)} events", err=True)


def _send(http: httpx.Client, batch: list[dict[str, Any]], retries: int) -> None:
    delay = 0.5
    for attempt in range(retries + 1):
        try:
            response = http.post(
                "/api/v1/events",
                content=json.dumps(batch),
                headers={"Content-Type": "application/cloudevents-batch+json"},
            )
        except httpx.TransportError as exc:
            if attempt == retries:
                raise click.ClickException(f"could not reach {http.base_url}: {exc}") from None
        else:
            if response.status_code == 204:
                return
            if response.status_code not in (429, 503) or attempt == retries:
                _check(response)
                raise click.ClickException(f"unexpected status {response.status_code}")
            delay = float(response.headers.get("retry-after", delay))
        time.sleep(delay)
        delay = min(delay * 2, 10)


@click.command()
@click.argument("meter")
@click.option("--from", "from_", help="Start (RFC 3339, inclusive).")
@click.option("--to", help="End (RFC 3339, exclusive).")
@click.option("--window", type=click.Choice(["MINUTE", "HOUR", "DAY", "MONTH"]), help="Window size.")
@click.option("--tz", help="IANA time zone for windows, e.g. Europe/Budapest.")
@click.option("--group-by", multiple=True, help="Group by subject, customer_id or a meter group-by key.")
@click.option("--subject", multiple=True, help="Only these subjects (groups by subject).")
@click.option("--customer", multiple=True, help="Only these customers (id or key; groups by customer).")
@_url
@_key
@_format
def query(
    meter: str,
    from_: str | None,
    to: str | None,
    window: str | None,
    tz: str | None,
    group_by: tuple[str, ...],
    subject: tuple[str, ...],
    customer: tuple[str, ...],
    url: str,
    api_key: str | None,
    fmt: str,
) -> None:
    """Query a meter and print a table, CSV or JSON."""
    params: list[tuple[str, str | int | float | bool | None]] = []
    for name, value in (("from", from_), ("to", to), ("windowSize", window), ("windowTimeZone", tz)):
        if value:
            params.append((name, value))
    params += [("groupBy", g) for g in group_by] + [("subject", s) for s in subject]
    params += [("filterCustomerId", c) for c in customer]
    headers = {"Accept": "text/csv"} if fmt == "csv" else {}
    with _client(url, api_key) as http:
        response = _check(http.get(f"/api/v1/meters/{meter}/query", params=params, headers=headers))
    if fmt == "csv":
        click.echo(response.text, nl=False)
        return
    result = response.json()
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
        return
    rows = []
    for row in result["data"]:
        flat = {
            "windowStart": row["windowStart"],
            "windowEnd": row["windowEnd"],
            "subject": row.get("subject") or "",
            "customerId": row.get("customerId", ""),
            **row.get("groupBy", {}),
            "value": row["value"],
        }
        rows.append(flat)
    columns = ["windowStart", "windowEnd"]
    if any(r["subject"] for r in rows):
        columns.append("subject")
    if any(r["customerId"] for r in rows):
        columns.append("customerId")
    columns += [g for g in group_by if g not in ("subject", "customer_id")] + ["value"]
    _table(rows, columns)


@click.group()
def events() -> None:
    """Look at ingested events."""


@events.command("tail")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between polls.")
@click.option("--count", default=0, help="Stop after this many events (0: run until interrupted).")
@_url
@_key
def events_tail(interval: float, count: int, url: str, api_key: str | None) -> None:
    """Print events as they arrive (JSON lines), oldest first."""
    seen: set[tuple[str, str]] = set()
    printed = 0
    since: str | None = None
    with _client(url, api_key) as http:
        while True:
            params = {"limit": "100"}
            if since:
                params["ingestedAtFrom"] = since
            items = _check(http.get("/api/v1/events", params=params)).json()
            for item in reversed(items):
                key = (item["event"]["source"], item["event"]["id"])
                if key in seen:
                    continue
                seen.add(key)
                click.echo(json.dumps(item))
                printed += 1
                since = item["ingestedAt"]
                if count and printed >= count:
                    return
            time.sleep(interval)
