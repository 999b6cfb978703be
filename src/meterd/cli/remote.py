"""The HTTP session and the output of the entitlement commands (`meterd features|entitlements|grants`).

Amounts travel as exact decimals both ways: request bodies are encoded from `Decimal`, responses are decoded
with every JSON number that is not an integer read as a `Decimal`, and `--json` prints the server's own bytes
re-indented (no number is ever parsed into a float)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar
from urllib.parse import quote

import click
import httpx
import msgspec

from meterd.cli.client import _key, _url

__all__ = [
    "AMOUNT",
    "TIME",
    "Api",
    "Column",
    "api_session",
    "columns",
    "decode",
    "echo_json",
    "entitlement_path",
    "exact",
    "expiration",
    "field",
    "json_flag",
    "metadata_option",
    "pairs",
    "print_record",
    "print_table",
    "segment",
    "server",
    "show",
]

F = TypeVar("F", bound=Callable[..., Any])

_decoder = msgspec.json.Decoder(float_hook=Decimal)
_encoder = msgspec.json.Encoder(decimal_format="number")


class Api:
    """A meterd server: requests that raise a ClickException (exit 1) with the problem's detail on errors."""

    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def send(self, method: str, path: str, body: Any = None, params: Any = None) -> httpx.Response:
        content = _encoder.encode(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else {}
        try:
            response = self._http.request(method, path, content=content, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise click.ClickException(f"could not reach {self._http.base_url}: {exc}") from None
        if response.status_code >= 400:
            raise click.ClickException(_problem(response))
        return response

    def get(self, path: str, params: Any = None) -> httpx.Response:
        return self.send("GET", path, params=params)

    def all_pages(self, path: str, params: list[tuple[str, str]] | None = None) -> list[Any]:
        """Every item of a paginated list (page objects `{items, page, pageSize, totalCount}`)."""
        items: list[Any] = []
        page = 1
        while True:
            query = [*(params or []), ("page", str(page)), ("pageSize", "1000")]
            body = decode(self.get(path, query))
            items += body["items"]
            if not body["items"] or len(items) >= body["totalCount"]:
                return items
            page += 1


def _problem(response: httpx.Response) -> str:
    """`404: entitlement not found: x` from an RFC 7807 body, or the status and raw text otherwise."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    return f"{response.status_code}: {detail or response.text or response.reason_phrase}"


@contextmanager
def api_session(url: str, api_key: str | None) -> Iterator[Api]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        yield Api(http)


def server(func: F) -> F:
    """--url and --api-key (env METERD_URL, METERD_API_KEY), as every client command has them."""
    return _url(_key(func))


json_flag = click.option("--json", "as_json", is_flag=True, help="Print the server's JSON instead of a table.")
metadata_option = click.option("--metadata", multiple=True, metavar="KEY=VALUE", help="Metadata (repeatable).")


def segment(*parts: str) -> str:
    """Path segments, each escaped (customer and feature keys may hold any character)."""
    return "/".join(quote(part, safe="") for part in parts)


def entitlement_path(customer: str, feature: str, *rest: str) -> str:
    """/api/v2/customers/{customer}/entitlements/{feature}[/rest...]"""
    return f"/api/v2/customers/{segment(customer)}/entitlements/{segment(feature, *rest)}"


def decode(response: httpx.Response) -> Any:
    return _decoder.decode(response.content)


def echo_json(response: httpx.Response | None = None, value: Any = None) -> None:
    """The server's JSON as it came (indented), or a value assembled from several responses."""
    raw = response.content if response is not None else _encoder.encode(value)
    click.echo(msgspec.json.format(raw, indent=2))


# -- parameters ---------------------------------------------------------------------------------------


class _Time(click.ParamType):
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """An RFC 3339 time with an offset, re-written canonically (UTC as `Z`)."""
        text = str(value).strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None or "T" not in text.upper():
            self.fail(f"{value!r} is not an RFC 3339 time with an offset, e.g. 2026-11-01T00:00:00Z", param, ctx)
        out = parsed.isoformat()
        return out.removesuffix("+00:00") + "Z" if parsed.utcoffset() == timedelta(0) else out


class _Amount(click.ParamType):
    name = "AMOUNT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Decimal:
        try:
            amount = Decimal(str(value).replace("_", ""))
        except InvalidOperation:
            amount = Decimal("NaN")
        if not amount.is_finite():
            self.fail(f"{value!r} is not a decimal number", param, ctx)
        return amount


TIME = _Time()
AMOUNT = _Amount()

_UNITS = {"h": "HOUR", "d": "DAY", "w": "WEEK", "m": "MONTH", "y": "YEAR"}
_EXPIRES = re.compile(r"^\s*(\d+)\s*(h|hours?|d|days?|w|weeks?|m|months?|y|years?)\s*$", re.IGNORECASE)


def expiration(text: str) -> dict[str, Any]:
    """`30d` -> {"duration": "DAY", "count": 30}; units h, d, w, m (months), y, or their names."""
    match = _EXPIRES.match(text)
    if match is None:
        raise click.BadParameter(
            f"{text!r}: use a count and a unit (h, d, w, m, y), e.g. 30d, 1y", param_hint="--expires-in"
        )
    return {"duration": _UNITS[match.group(2)[0].lower()], "count": int(match.group(1))}


def pairs(items: Iterable[str], option: str) -> dict[str, str]:
    """('team=ai', 'tier=pro') -> {'team': 'ai', 'tier': 'pro'}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint=option)
        out[key] = value
    return out


# -- output -------------------------------------------------------------------------------------------


def exact(value: Any) -> str:
    """A cell: decimals in full without an exponent or trailing zeros (1E+6 -> 1000000), an object as
    `key: value` lines, a list as compact JSON, nothing for null."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        text = format(value, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    if isinstance(value, dict):
        return "\n".join(f"{key}: {exact(item)}" for key, item in value.items())
    if isinstance(value, list):
        return _encoder.encode(value).decode()
    return str(value)


Column = tuple[str, Callable[[dict[str, Any]], Any]]


def field(key: str) -> Callable[[dict[str, Any]], Any]:
    """A column getter; `a.b` reads a nested field."""

    def get(row: dict[str, Any]) -> Any:
        value: Any = row
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    return get


def columns(*keys: str | tuple[str, str]) -> list[Column]:
    """Columns named by their JSON path (`"balance"`), or by a header and a path (`("expires", "expiresAt")`)."""
    return [(key, field(key)) if isinstance(key, str) else (key[0], field(key[1])) for key in keys]


def show(response: httpx.Response, fields: list[Column], as_json: bool) -> None:
    """One object: the server's JSON, or a field/value table."""
    if as_json:
        echo_json(response)
    else:
        print_record(decode(response), fields)


def print_table(rows: list[dict[str, Any]], columns: list[Column], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cells = [[exact(get(row)) for _, get in columns] for row in rows]
    # no cell folds when the widest lines fit side by side; when they cannot, cells fold (never crop)
    widest = [max((len(line) for row in cells for line in row[i].splitlines()), default=0) for i in range(len(columns))]
    widest = [max(width, len(name)) for width, (name, _) in zip(widest, columns, strict=True)]
    fits = sum(widest) + 3 * len(columns) + 1 <= console.width
    table = Table(title=title, title_justify="left")
    for (name, _), width in zip(columns, widest, strict=True):
        table.add_column(name, overflow="fold", min_width=width if fits else None)
    for row_cells in cells:
        table.add_row(*row_cells)
    console.print(table)


def print_record(record: dict[str, Any], fields: list[Column], title: str | None = None) -> None:
    """One object as a two-column table (field, value); fields that are null or absent are left out."""
    from rich.console import Console
    from rich.table import Table

    table = Table("field", "value", title=title, title_justify="left", show_header=False)
    for name, get in fields:
        value = get(record)
        if value is not None:
            table.add_row(name, exact(value))
    Console().print(table)
