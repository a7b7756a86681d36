"""What a call's ``params``, ``json`` and ``data`` become on the wire: a query string and body bytes.

The rules are requests' (``PreparedRequest.prepare_body`` and ``_encode_params``),
kept here so that every transport sends the same bytes: ``json`` is compact
UTF-8 JSON (``application/json``) unless ``data`` is given; a mapping or a list
of pairs as ``data`` is a form (``application/x-www-form-urlencoded``); text and
bytes go as they are (text as Latin-1, as http.client sends it); a file object or
an iterable of chunks is read whole. Pure.
"""

from __future__ import annotations

import json as _json
from typing import Any, Iterable, List, Mapping, Optional, Tuple, Union
from urllib.parse import urlencode

#: The Content-Type a JSON body gets when the caller names none.
JSON = "application/json"
#: The Content-Type a form body gets when the caller names none.
FORM = "application/x-www-form-urlencoded"


def _pairs(data: Union[Mapping[Any, Any], Iterable[Any]]) -> List[Tuple[Any, Any]]:
    items = data.items() if isinstance(data, Mapping) else data
    result: List[Tuple[Any, Any]] = []
    for key, values in items:
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            values = [values]
        for value in values:
            if value is not None:
                result.append((key.encode("utf-8") if isinstance(key, str) else key,
                               value.encode("utf-8") if isinstance(value, str) else value))
    return result


def query_string(params: Any) -> str:
    """*params* (a mapping, a list of pairs, or text) as an encoded query string ("" for none)."""
    if not params:
        return ""
    if isinstance(params, bytes):
        return params.decode("utf-8")
    if isinstance(params, str):
        return params
    return urlencode(_pairs(params), doseq=True)


def request_body(data: Any, json: Any) -> Tuple[Optional[bytes], Optional[str]]:
    """``(body, content type to set unless the caller set one)`` for a call's *data* / *json*."""
    if not data and json is not None:
        return _json.dumps(json, allow_nan=False).encode("utf-8"), JSON
    if not data:
        return None, None
    if isinstance(data, bytes):
        return data, None
    if isinstance(data, str):
        return data.encode("latin-1"), None  # as http.client encodes a str body
    if hasattr(data, "read"):
        chunk = data.read()
        return (chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)), None
    if isinstance(data, (Mapping, list, tuple)):
        return urlencode(_pairs(data), doseq=True).encode("ascii"), FORM
    # Any other iterable: chunks of a body, read whole.
    return b"".join(c.encode("utf-8") if isinstance(c, str) else bytes(c) for c in data), None


__all__ = ["FORM", "JSON", "query_string", "request_body"]
