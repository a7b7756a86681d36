"""What a polled body becomes: decoded text or JSON, the items of a ``data_extractor``, a cursor's records.

Pure functions of the bytes and headers a poll received; the page walker does the fetching.
"""

from __future__ import annotations

import codecs
import json as jsonlib
import sys
from collections.abc import Iterator
from typing import Any, List, Optional, Sequence, Tuple

#: Codecs whose bytes ``json.loads`` reads itself (RFC 8259: UTF-8; UTF-16/32 and a BOM recognised).
_JSON_CODECS = ("utf-8", "utf-16", "utf-32")


def decode_body(content: bytes, content_type: str) -> Tuple[Any, Optional[ValueError]]:
    """``(body, error)``: parsed JSON for a JSON content type, else text; None when empty.

    A body that cannot be decoded as its content type says is delivered as text
    (undecodable bytes replaced), with a ValueError beside it saying why: JSON
    that does not parse, JSON nested deeper than Python can parse, or bytes that
    are not in the charset of a JSON or ``text/*`` type (UTF-8 unless declared).
    Other types are text too, with their undecodable bytes replaced, and no error.
    """
    if not content:
        return None, None
    media_type, charset = parse_content_type(content_type)
    codec = text_codec(charset)
    error: Optional[ValueError] = None
    if is_json(media_type):
        try:
            if codec is None or codec.startswith(_JSON_CODECS):
                return jsonlib.loads(content), None
            return jsonlib.loads(content.decode(codec)), None
        except RecursionError:  # the parser nests one Python call per level: too deep is a bad body
            error = ValueError(f"JSON nested deeper than Python's recursion limit of {sys.getrecursionlimit()}")
        except UnicodeDecodeError as exc:
            error = _not_in_charset(exc, codec or exc.encoding)  # json.loads names what it detected
        except ValueError as exc:
            error = ValueError(f"invalid JSON: {exc}")
    elif media_type.startswith("text/"):
        try:
            return content.decode(codec or "utf-8"), None
        except UnicodeDecodeError as exc:
            error = _not_in_charset(exc, codec or "utf-8")
    return content.decode(codec or "utf-8", errors="replace"), error


def is_json(media_type: str) -> bool:
    """``application/json`` and every ``+json`` type (``application/problem+json``)."""
    return media_type == "application/json" or media_type.endswith("+json")


def text_codec(charset: Optional[str]) -> Optional[str]:
    """The codec a declared charset names, or None when there is none or it is no text encoding."""
    if not charset:
        return None
    try:
        name = codecs.lookup(charset).name
        b" ".decode(name)  # a codec that is not a text encoding (base64, hex, zlib) raises LookupError
    except (LookupError, ValueError):  # unknown, or not a name at all (a NUL inside)
        return None
    return name


def _not_in_charset(exc: UnicodeDecodeError, codec: str) -> ValueError:
    return ValueError(f"not valid {codec}: {exc.reason} at byte {exc.start}")


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


__all__ = ["as_items", "decode_body", "is_json", "parse_content_type", "records", "text_codec"]
