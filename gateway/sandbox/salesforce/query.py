"""Salesforce sandbox SOQL: ``GET .../query?q=`` and ``.../queryAll?q=``, batches and ``nextRecordsUrl``.

Enough SOQL for change capture and for trying queries by hand: ``SELECT FIELDS(ALL) | f1, f2 FROM
<Object> [WHERE <conditions>] [ORDER BY f [ASC|DESC], ...] [LIMIT n]``, where conditions compare
fields with ``= != < <= > >=`` to dateTime literals, quoted strings, numbers, ``true``/``false`` or
``null``, joined by ``AND``/``OR`` with parentheses. ``FIELDS(ALL)`` needs ``LIMIT`` <= 200, as in
Salesforce. ``queryAll`` also returns deleted rows (``IsDeleted = true``) from the recycle bin.
Results come in batches of 2,000 (``Sforce-Query-Options: batchSize=N``, 200 to 2,000), the rest
behind ``nextRecordsUrl`` (``GET .../query/<locator>-<n>``).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from gateway.sandbox.common import Reject
from gateway.sandbox.salesforce.routes import DATA
from gateway.sandbox.salesforce.state import (
    COMPUTED,
    SALESFORCE,
    SOBJECTS,
    SYSTEM_FIELDS,
    SalesforceState,
    row_view,
    sf_error,
)

_QUERY = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<obj>\w+)(?:\s+WHERE\s+(?P<where>.+?))?"
    r"(?:\s+ORDER\s+BY\s+(?P<order>.+?))?(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_TOKEN = re.compile(
    r"\s*(?:(?P<op>>=|<=|!=|=|<|>)|(?P<paren>[()])|(?P<str>'(?:[^'\\]|\\.)*')"
    r"|(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d))|(?P<word>[\w.]+))"
)
Predicate = Callable[[dict[str, Any]], bool]
DEFAULT_BATCH = 2000


def malformed(message: str) -> Reject:
    return Reject(sf_error(400, "MALFORMED_QUERY", message))


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    position = 0
    while position < len(text.rstrip()):
        found = _TOKEN.match(text, position)
        if found is None:
            raise malformed(f"unexpected token near: {text[position : position + 20]}")
        kind = found.lastgroup or ""
        value: Any = found.group(kind)
        if kind == "str":
            value = value[1:-1].replace("\\'", "'")
        elif kind == "time":
            value = datetime.fromisoformat(value)
        out.append((kind, value))
        position = found.end()
    return out


class _Where:
    """A recursive-descent parser of the WHERE clause into a predicate over rows."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0

    def parse(self) -> Predicate:
        predicate = self._or()
        if self.at != len(self.tokens):
            raise malformed("unexpected text after the WHERE conditions")
        return predicate

    def _peek_word(self, word: str) -> bool:
        return (self.at < len(self.tokens) and self.tokens[self.at] == ("word", word)) or (
            self.at < len(self.tokens)
            and self.tokens[self.at][0] == "word"
            and str(self.tokens[self.at][1]).upper() == word
        )

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._peek_word("OR"):
            self.at += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else lambda row: any(p(row) for p in parts)

    def _and(self) -> Predicate:
        parts = [self._atom()]
        while self._peek_word("AND"):
            self.at += 1
            parts.append(self._atom())
        return parts[0] if len(parts) == 1 else lambda row: all(p(row) for p in parts)

    def _atom(self) -> Predicate:
        if self.at < len(self.tokens) and self.tokens[self.at] == ("paren", "("):
            self.at += 1
            inner = self._or()
            if self.at >= len(self.tokens) or self.tokens[self.at] != ("paren", ")"):
                raise malformed("unbalanced parentheses")
            self.at += 1
            return inner
        try:
            (k1, name), (k2, op), (k3, literal) = self.tokens[self.at : self.at + 3]
        except ValueError:
            raise malformed("incomplete condition") from None
        if k1 != "word" or k2 != "op" or k3 not in ("str", "time", "word"):
            raise malformed(f"bad condition near {name}")
        self.at += 3
        return _compare(str(name), op, _literal(k3, literal))


def _literal(kind: str, value: Any) -> Any:
    if kind != "word":
        return value
    lowered = str(value).lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    try:
        return float(value)
    except ValueError:
        raise malformed(f"unexpected literal {value}") from None


def _compare(name: str, op: str, literal: Any) -> Predicate:
    def check(row: dict[str, Any]) -> bool:
        value = row.get(name)
        if isinstance(literal, datetime) and isinstance(value, str):
            value = datetime.fromisoformat(value)
        if op in ("=", "!="):
            return bool((value == literal) == (op == "="))
        if value is None or literal is None:
            return False
        try:
            below, equal = bool(value < literal), bool(value == literal)
        except TypeError:
            return False
        return {"<": below, "<=": below or equal, ">": not below and not equal, ">=": not below}[op]

    return check


def _ordered(rows: list[dict[str, Any]], order: str | None) -> list[dict[str, Any]]:
    for part in reversed([p.strip() for p in (order or "").split(",") if p.strip()]):
        name, _, direction = part.partition(" ")
        descending = direction.strip().upper() == "DESC"
        rows.sort(key=lambda r: (r.get(name) is None, str(r.get(name) or "")), reverse=descending)
    return rows


def run_query(state: SalesforceState, soql: str, *, all_rows: bool, version: str) -> list[dict[str, Any]]:
    """Every matching row, as the API shows it, in the asked order."""
    query = _QUERY.match(soql)
    if query is None:
        raise malformed("unexpected SOQL: expected SELECT ... FROM ...")
    sobject = next((name for name in SOBJECTS if name.lower() == query["obj"].lower()), None)
    if sobject is None:
        raise Reject(sf_error(400, "INVALID_TYPE", f"sObject type '{query['obj']}' is not supported."))
    limit = int(query["limit"]) if query["limit"] else None
    fields_text = query["fields"].strip()
    fields = None
    if fields_text.upper().replace(" ", "") == "FIELDS(ALL)":
        if limit is None or limit > 200:
            raise malformed("The SOQL FIELDS function must specify a LIMIT of at most 200")
    else:
        fields = [f.strip() for f in fields_text.split(",")]
        known = {*SOBJECTS[sobject].fields, *COMPUTED.get(sobject, {}), *SYSTEM_FIELDS}
        unknown = [f for f in fields if f not in known]
        if unknown:
            raise Reject(sf_error(400, "INVALID_FIELD", f"No such column '{unknown[0]}' on entity '{sobject}'"))
    rows = list(state.table(sobject).values())
    if all_rows:
        rows += [row for kind, row in state.deleted.values() if kind == sobject]
    if query["where"]:
        predicate = _Where(query["where"]).parse()
        rows = [r for r in rows if predicate(r)]
    rows = _ordered(rows, query["order"])[:limit]
    return [row_view(sobject, r, version, fields) for r in rows]


def _batch_size(request: web.Request) -> int:
    found = re.search(r"batchSize=(\d+)", request.headers.get("Sforce-Query-Options", ""))
    return min(max(int(found.group(1)), 200), DEFAULT_BATCH) if found else DEFAULT_BATCH


def _answer(state: SalesforceState, version: str, rows: list[dict[str, Any]], size: int, total: int) -> web.Response:
    body: dict[str, Any] = {"totalSize": total, "done": len(rows) <= size, "records": rows[:size]}
    if len(rows) > size:
        locator = "01g" + secrets.token_hex(6)
        state.query_batches[locator] = (version, rows[size:])
        body["nextRecordsUrl"] = f"/services/data/{version}/query/{locator}-{total - len(rows) + size}"
    return web.json_response(body)


def _query_view(all_rows: bool) -> Callable[[web.Request], Any]:
    async def view(request: web.Request) -> web.Response:
        state, version = request.app[SALESFORCE], request.match_info["version"]
        soql = request.query.get("q")
        if not soql:
            raise malformed("q: a SOQL query is required")
        rows = run_query(state, soql, all_rows=all_rows, version=version)
        return _answer(state, version, rows, _batch_size(request), len(rows))

    return view


async def more_results(request: web.Request) -> web.Response:
    """``GET .../query/<locator>-<n>``: the next batch of a query."""
    state, version = request.app[SALESFORCE], request.match_info["version"]
    locator = request.match_info["locator"].rpartition("-")[0]
    found = state.query_batches.pop(locator, None)
    if found is None:
        raise Reject(sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator"))
    rows, size = found[1], _batch_size(request)
    return _answer(state, version, rows, size, int(request.match_info["locator"].rpartition("-")[2]) + len(rows))


QUERY_ROUTES = [
    web.get(DATA + "/query", _query_view(all_rows=False)),
    web.get(DATA + "/queryAll", _query_view(all_rows=True)),
    web.get(DATA + "/query/{locator}", more_results),
]
