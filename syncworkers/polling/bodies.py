"""What a polled body becomes: decoded text or JSON, the items of a ``data_extractor``, a cursor's records.

Pure functions of the bytes and headers a poll received; the page walker does the fetching.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Iterator
from typing import Any, List, Optional, Sequence, Tuple


def decode_body(content: bytes, content_type: str) -> Tuple[Any, Optional[ValueError]]:
    """``(body, json_error)``: parsed JSON for a JSON content type, else text; None when empty.

    A JSON content type whose body does not parse is delivered as text, with the
    parse error returned beside it (the API answered: only its JSON is broken).
    """
    if not content:
        return None, None
    media_type, charset = parse_content_type(content_type)
    error = None
    if media_type == "application/json" or media_type.endswith("+json"):
        try:
            return jsonlib.loads(content), None
        except ValueError as exc:
            error = exc
    try:
        return content.decode(charset or "utf-8", errors="replace"), error
    except LookupError:  # an unknown charset name
        return content.decode("utf-8", errors="replace"), error


def parse_content_type(value: str) -> Tuple[str, Optional[str]]:
    """``("application/json", "utf-8")`` from ``"application/json; charset=UTF-8"``."""
    media_type, *params = value.split(";")
    charset = None
    for param in params:
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip('"') or None
    return media_type.strip().lower(), charset


def as_items(extracted: Any) -> List[Any]:
    """What a data_extractor returned, as messages: a list, tuple or iterator is many, anything else one."""
    if isinstance(extracted, (list, tuple, Iterator)):
        return list(extracted)
    return [extracted]


def records(items: Optional[Sequence[Any]]) -> List[Any]:
    """The records a cursor looks at: each item, or each element of an item that is a JSON array."""
    found: List[Any] = []
    for item in items or []:
        found += item if isinstance(item, list) else [item]
    return found


__all__ = ["as_items", "decode_body", "parse_content_type", "records"]
