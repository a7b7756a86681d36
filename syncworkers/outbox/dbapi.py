"""Statements on a caller's database connection, whatever its driver's parameter style.

Transactional enqueue writes a delivery on the caller's own connection (inside the
caller's transaction), which may come from sqlite3, psycopg or another DB-API
driver. Queries here are written with ``%(name)s`` placeholders and rewritten to
the connection's ``paramstyle``.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Dict, List, Mapping, Tuple, Union

_NAMED = re.compile(r"%\((\w+)\)s")

Params = Union[Dict[str, Any], List[Any]]


def paramstyle(connection: Any) -> str:
    """The DB-API ``paramstyle`` of *connection*'s driver; TypeError when it cannot be told."""
    style = getattr(connection, "paramstyle", None)
    if style is None:
        package = type(connection).__module__.split(".")[0]
        style = getattr(sys.modules.get(package), "paramstyle", None)
    if style not in ("qmark", "numeric", "named", "format", "pyformat"):
        raise TypeError(
            f"connection must be a DB-API connection (sqlite3, psycopg, ...); cannot tell the"
            f" parameter style of {type(connection).__module__}.{type(connection).__name__}")
    return str(style)


def convert(query: str, params: Mapping[str, Any], style: str) -> Tuple[str, Params]:
    """*query* with ``%(name)s`` placeholders, and *params*, in the given parameter style."""
    if style == "pyformat":
        return query, dict(params)
    names = _NAMED.findall(query)
    if style == "named":
        return _NAMED.sub(r":\1", query), dict(params)
    values = [params[name] for name in names]
    if style == "qmark":
        return _NAMED.sub("?", query), values
    if style == "format":
        return _NAMED.sub("%s", query), values
    counter = iter(range(1, len(names) + 1))
    return _NAMED.sub(lambda _: f":{next(counter)}", query), values


def execute(connection: Any, query: str, params: Mapping[str, Any]) -> None:
    """Run *query* on *connection* in its current transaction: never commits nor rolls back."""
    text, values = convert(query, params, paramstyle(connection))
    cursor = connection.cursor()
    try:
        cursor.execute(text, values)
    finally:
        cursor.close()


__all__ = ["convert", "execute", "paramstyle"]
