"""Property tests of meter JSONPaths over real HTTP (compat reference 2 and 2.1): `valueProperty` and `groupBy`
values are validated at creation (a 400 naming the field, never a 5xx), and an accepted path reads event data the
way ClickHouse's JSON_VALUE does, checked against an independent evaluator of the paths it generates.

The evaluator covers the path forms of the generator: `$` followed by member steps (`.name`, `."any key"`,
`["any key"]`, `['any key']`) and index steps (`[n]`). JSON_VALUE gives a scalar as text, '' when the path is
missing or leads to an object or an array, and 'null' for JSON null (tests/model.py formats numbers)."""

from __future__ import annotations

import itertools
import json
import math
import re
import string
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st

from tests.api.helpers import barrier, ingest_ok
from tests.api.properties import examples, never_5xx, refused_one_of, render
from tests.conftest import Server
from tests.model import MISSING, json_value, number

# Varied data: nested objects and arrays, keys that need quoting, numbers, numeric strings, null, booleans.
DATA: list[dict[str, Any]] = [
    {"a": 1, "b": {"c": 2, "d": [10, 20, {"e": 5}]}, "x y": 3, "1": 4, "arr": [[7, 8]], "s": "12", "n": None},
    {"a": "2.5", "b": {"c": "x", "d": []}, "x y": "k", "1": 1.5, "arr": [], "s": "abc", "n": 5, "A": -1},
    {"a": {"k": 1}, "b": [1, 2], "x y": None, "s": 7, "é": 2, "a-b": "3"},
    {"b": {"c": 3, "d": [1]}, "a": [1], "1": "q", "t": True, "é": "x", "a.b": 4},
    {},
    {"a": 1.25, "b": {"c": 2, "d": [30]}, "x y": 3, "t": False, "_u": 11, "A": 2, "a-b": 1},
    {"a": -4, "b": {"c": None, "d": [2, [3]]}, "s": "12", "arr": [[1], [2]], "o": {}, "_u": "11"},
    {"a": "1e2", "b": {"c": 2.0}, "1": 4, "n": 0, "a.b": "4", "o": {"p": 1}},
]
KEYS = sorted({k for d in DATA for k in d} | {"c", "d", "e", "k", "p"})
SERIAL = itertools.count()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def etype(client: httpx.Client) -> str:
    """An event type whose events carry DATA, at distinct times (LATEST has no ties)."""
    name = f"jsonpath_{uuid.uuid4().hex[:10]}"
    base = datetime(2024, 5, 1, tzinfo=UTC)
    events = [
        {"specversion": "1.0", "id": f"{name}-{i}", "source": "jsonpath", "type": name, "subject": "s"}
        | {"time": render(base + i * timedelta(minutes=7), 0, 6), "data": data}
        for i, data in enumerate(DATA)
    ]
    ingest_ok(client, events)
    barrier(client)
    return name


# -- paths and the evaluator -------------------------------------------------------------------------

identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,4}|[0-9]{1,2}", fullmatch=True)
quotable = st.text(string.ascii_letters + string.digits + " .-_é", min_size=1, max_size=5)


def member(key: str) -> st.SearchStrategy[tuple[str, str | int]]:
    """The text of a step selecting `key`: dotted when it is a plain name, else quoted."""
    quoted = [(f'["{key}"]', key), (f"['{key}']", key), (f'."{key}"', key)]
    plain = re.fullmatch(r"[A-Za-z0-9_]+", key) is not None
    return st.sampled_from([(f".{key}", key), *quoted] if plain else quoted)


random_steps = st.one_of(
    identifiers.flatmap(member),
    (st.sampled_from(KEYS) | quotable).flatmap(member),
    st.integers(0, 3).map(lambda i: (f"[{i}]", i)),
)


@st.composite
def plausible_paths(draw: st.DrawFn) -> tuple[str, list[str | int]]:
    """A path that mostly walks the keys and indexes one of the events has, with some random steps."""
    node: Any = draw(st.sampled_from(DATA))
    parts: list[tuple[str, str | int]] = []
    for _ in range(draw(st.integers(1, 3))):
        kinds = ["random"]
        if isinstance(node, dict) and node:
            kinds += ["member", "member"]
        if isinstance(node, list) and node:
            kinds += ["index", "index"]
        kind = draw(st.sampled_from(kinds))
        if kind == "member":
            step = draw(member(draw(st.sampled_from(sorted(node)))))
        elif kind == "index":
            step = (f"[{(i := draw(st.integers(0, len(node) - 1)))}]", i)
        else:
            step = draw(random_steps)
        node = select(node, [step[1]])
        parts.append(step)
    return "$" + "".join(text for text, _ in parts), [key for _, key in parts]


def select(data: Any, keys: list[str | int]) -> Any:
    node = data
    for key in keys:
        if isinstance(key, int):
            if not isinstance(node, list) or key >= len(node):
                return MISSING
        elif not isinstance(node, dict) or key not in node:
            return MISSING
        node = node[key]
    return node


def text_of(value: Any) -> str:
    """JSON_VALUE's text of a selected value."""
    return "" if value is MISSING else json_value({"v": value}, "$.v")


def aggregate(aggregation: str, texts: list[str]) -> float | None:
    if aggregation == "COUNT":
        return float(len(texts))
    if aggregation == "UNIQUE_COUNT":
        return float(len({t for t in texts if t != "null"}))
    numbers = [n for t in texts if (n := number(t)) is not None]
    if not numbers:
        return None
    return {"SUM": math.fsum, "MIN": min, "MAX": max}[aggregation](numbers)


# -- properties --------------------------------------------------------------------------------------


def _create(client: httpx.Client, etype: str, aggregation: str, value: str | None, group: dict[str, str]) -> Any:
    slug = f"jp_{next(SERIAL)}_{uuid.uuid4().hex[:6]}"
    body: dict[str, Any] = {"slug": slug, "eventType": etype, "aggregation": aggregation, "groupBy": group}
    if value is not None:
        body["valueProperty"] = value
    note(f"POST /api/v1/meters {body}")
    return slug, client.post("/api/v1/meters", json=body)


@examples(40)
@given(
    aggregation=st.sampled_from(["SUM", "MIN", "MAX", "UNIQUE_COUNT", "COUNT"]),
    value=plausible_paths(),
    group=plausible_paths(),
)
def test_accepted_paths_read_data_like_json_value(
    client: httpx.Client,
    etype: str,
    aggregation: str,
    value: tuple[str, list[str | int]],
    group: tuple[str, list[str | int]],
) -> None:
    value_path = None if aggregation == "COUNT" else value[0]
    slug, response = _create(client, etype, aggregation, value_path, {"g": group[0]})
    if value_path == group[0]:
        refused_one_of(response, {"groupBy.g"})
        return
    if response.status_code == 400:  # ClickHouse's JSONPath parser refused a path (e.g. a reserved word)
        event("refused")
        refused_one_of(response, {"valueProperty", "groupBy.g"})
        return
    assert response.status_code == 201, response.text
    try:
        rows = client.get(f"/api/v1/meters/{slug}/query", params={"groupBy": "g"})
        assert rows.status_code == 200, rows.text
        got = {row["groupBy"]["g"]: row["value"] for row in rows.json()["data"]}
        groups: dict[str, list[str]] = defaultdict(list)
        for data in DATA:
            groups[text_of(select(data, group[1]))].append(text_of(select(data, value[1])))
        want = {g: v for g, texts in groups.items() if (v := aggregate(aggregation, texts)) is not None}
        assert got == want
        values = client.get(f"/api/v1/meters/{slug}/group-by/g/values", params={"from": "2024-01-01T00:00:00Z"})
        assert values.status_code == 200 and sorted(values.json()) == sorted(groups), values.text
    finally:
        client.delete(f"/api/v1/meters/{slug}")


mutated_paths = st.builds(  # a plausible path with a character slipped in or cut out
    lambda path, at, char, cut: path[:at] + ("" if cut else char) + path[at + cut :],
    plausible_paths().map(lambda p: p[0]),
    st.integers(0, 12),
    st.sampled_from(list("$.[]'\" *?@-:,")) | st.characters(blacklist_categories=("Cs",)),
    st.integers(0, 1),
)
odd_paths = st.one_of(
    plausible_paths().map(lambda p: p[0]),
    plausible_paths().map(lambda p: p[0]),
    mutated_paths,
    mutated_paths,
    st.text(max_size=12),
    st.text(max_size=12).map(lambda s: "$" + s),
    st.text(string.punctuation + "$.[]'\"0a ", max_size=10),
    st.sampled_from(["$", "$.", "$..a", "$.*", "$[*]", "$.a[-1]", "$.a[last]", "$.a[1 to 2]", '$[""]', "$.a\\", "$a"]),
)
group_keys = st.sampled_from(
    ["g", "g", "g", "G_1", "_", "subject", "customer_id", "1g", "g-h", "g h", "é", ""]
) | st.text(max_size=6)


@examples(80)
@given(value=odd_paths, key=group_keys, path=odd_paths)
def test_any_path_or_key_is_a_201_or_a_400_naming_it(
    client: httpx.Client, etype: str, value: str, key: str, path: str
) -> None:
    slug, response = _create(client, etype, "SUM", value, {key: path})
    never_5xx(response)
    must_fail = set()
    if not value.startswith("$"):
        must_fail.add("valueProperty")
    if not path.startswith("$") or path == value:
        must_fail.add(f"groupBy.{key}")
    if not re.fullmatch(r"[a-zA-Z_][0-9a-zA-Z_]*", key) or key in ("subject", "customer_id"):
        must_fail.add(f"groupBy.{key}")
    if response.status_code != 201:
        named = refused_one_of(response, {"valueProperty", f"groupBy.{key}"})
        assert must_fail <= named, (must_fail, named)
        return
    assert not must_fail, response.text
    event("accepted")
    try:  # whatever ClickHouse accepted, the meter's reads answer
        for url, params in (
            (f"/api/v1/meters/{slug}/query", {"groupBy": key, "windowSize": "DAY"}),
            (f"/api/v1/meters/{slug}/group-by/{key}/values", {}),
            ("/api/v2/events", {"filter": json.dumps({"type": {"$eq": etype}})}),  # validationError reads the paths
        ):
            response = client.get(url, params=params)
            assert response.status_code == 200, (url, response.text)
    finally:
        client.delete(f"/api/v1/meters/{slug}")
