"""The values at the transport seam: the project's own request and response.

HTTPClient builds a :class:`Request` (URL joined and checked, headers merged and
validated, body as bytes, timeouts and deadline) and a transport answers with a
:class:`Response` (status, header list, body bytes, final URL, elapsed time). No
transport library's objects cross the seam, so libcurl never pays for requests'
and requests is one adapter among others. :class:`Response` keeps the attributes
callers of ``HTTPClient.request()`` read on a ``requests.Response``.
"""

from __future__ import annotations

import datetime
import json as _json
from typing import Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from ..exceptions import RequestError

#: A header value as callers may give it.
HeaderValue = Union[str, bytes]
#: Headers in order, a name possibly repeated.
HeaderPairs = Tuple[Tuple[str, HeaderValue], ...]


class Request(NamedTuple):
    """One request of an attempt, as a transport sends it (immutable)."""

    method: str  #: upper case
    url: str  #: absolute, checked, query string included
    headers: HeaderPairs  #: every header to send, in order (``Content-Length`` is the transport's)
    body: Optional[bytes]
    timeouts: Tuple[float, float]  #: (connect, read) seconds
    deadline: float  #: seconds from connect to the last byte, whatever the receiver does

    def header(self, name: str) -> Optional[HeaderValue]:
        """The value of header *name* (any case), or None."""
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None

    def with_header(self, name: str, value: HeaderValue) -> "Request":
        """This request with header *name* set to *value* (replacing any of that name): e.g. a trace header
        added per attempt."""
        lower = name.lower()
        kept = tuple(pair for pair in self.headers if pair[0].lower() != lower)
        return self._replace(headers=kept + ((name, value),))


class Headers(Mapping[str, str]):
    """Response headers: the list as received, looked up case-insensitively.

    A repeated field reads as its values joined with ``", "`` (as urllib3 joins
    them); :meth:`get_all` gives them one by one. ``dict(headers)`` has each name
    as first spelled. Parsed from the raw head lines on first use.
    """

    __slots__ = ("_pairs", "_lines", "_index")

    def __init__(self, pairs: Sequence[Tuple[str, str]] = (), *, lines: Optional[Sequence[bytes]] = None) -> None:
        self._pairs: Optional[List[Tuple[str, str]]] = list(pairs) if lines is None else None
        self._lines = lines
        self._index: Optional[Dict[str, Tuple[str, str]]] = None

    @property
    def pairs(self) -> List[Tuple[str, str]]:
        """Every field in order, repeated names kept."""
        if self._pairs is None:
            self._pairs = _parse_lines(self._lines or ())
            self._lines = None
        return self._pairs

    def _lookup(self) -> Dict[str, Tuple[str, str]]:
        index = self._index
        if index is None:
            index = {}
            for name, value in self.pairs:
                lower = name.lower()
                known = index.get(lower)
                index[lower] = (name, value) if known is None else (known[0], f"{known[1]}, {value}")
            self._index = index
        return index

    def __getitem__(self, name: str) -> str:
        return self._lookup()[name.lower()][1]

    def get(self, name: str, default: Any = None) -> Any:
        found = self._lookup().get(name.lower())
        return default if found is None else found[1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lookup()

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._lookup().values())

    def __len__(self) -> int:
        return len(self._lookup())

    def as_dict(self) -> Dict[str, str]:
        """What ``dict(headers)`` gives (each name as first spelled), without a lookup per name."""
        return dict(self._lookup().values())

    def get_all(self, name: str) -> List[str]:
        """Every value of field *name*, in order."""
        lower = name.lower()
        return [value for key, value in self.pairs if key.lower() == lower]

    def lower_items(self) -> Iterator[Tuple[str, str]]:
        """``(lowercase name, value)`` of each field (repeated ones joined)."""
        return ((lower, pair[1]) for lower, pair in self._lookup().items())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.lower_items()) == {str(k).lower(): v for k, v in other.items()}

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(dict(self))


def _parse_lines(lines: Sequence[bytes]) -> List[Tuple[str, str]]:
    """The fields of a raw response head (status line first, if any)."""
    pairs: List[Tuple[str, str]] = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or name.startswith(b"HTTP/"):
            continue
        pairs.append((name.decode("latin-1").strip(), value.decode("latin-1").strip()))
    return pairs


class Response:
    """A whole response: what ``HTTPClient.request()`` returns, whatever the transport.

    The attributes callers of requests read are here: ``status_code``, ``reason``,
    ``headers`` (case-insensitive), ``content``, ``text``, ``json()``, ``url``,
    ``elapsed``, ``ok``, ``history`` (the redirects followed), ``encoding``; and
    ``attempts`` and ``outcome`` (:class:`~syncworkers.http.outcome.Outcome`) set
    by HTTPClient. The body is always read whole (under ``max_response_size``).
    """

    __slots__ = ("status_code", "_reason", "headers", "content", "url", "seconds", "history", "request",
                 "attempts", "outcome", "_encoding")

    def __init__(self, status_code: int, headers: Headers, content: bytes, url: str, *,
                 reason: Optional[str] = None, seconds: float = 0.0, request: Optional[Request] = None) -> None:
        self.status_code = status_code
        self._reason = reason
        self.headers = headers
        self.content = content
        self.url = url
        self.seconds = seconds  #: from sending the request to the end of the answer
        self.history: List["Response"] = []
        self.request = request
        self.attempts = 1
        self.outcome: Any = None
        self._encoding: Optional[str] = None

    @property
    def reason(self) -> str:
        """The status line's reason phrase ("" when the server sent none)."""
        return self._reason or ""

    @property
    def ok(self) -> bool:
        """True for a status under 400, as in requests."""
        return self.status_code < 400

    @property
    def elapsed(self) -> datetime.timedelta:
        return datetime.timedelta(seconds=self.seconds)

    @property
    def encoding(self) -> Optional[str]:
        """The charset of ``Content-Type`` (ISO-8859-1 for text without one, as in requests)."""
        if self._encoding is None:
            self._encoding = _charset(self.headers.get("Content-Type"))
        return self._encoding

    @encoding.setter
    def encoding(self, value: Optional[str]) -> None:
        self._encoding = value

    @property
    def text(self) -> str:
        """The body decoded with :attr:`encoding` (UTF-8 when none is known), undecodable bytes replaced."""
        return self.content.decode(self.encoding or "utf-8", errors="replace")

    def json(self, **kwargs: Any) -> Any:
        """The body parsed as JSON (ValueError when it is not)."""
        return _json.loads(self.content.decode(self.encoding or "utf-8") if self.encoding else self.content,
                           **kwargs)

    def raise_for_status(self) -> None:
        """RequestError for a 4xx or 5xx status."""
        if self.status_code >= 400:
            raise RequestError(f"HTTP {self.status_code} {self.reason}".rstrip(), url=self.url,
                               status=self.status_code)

    def close(self) -> None:
        """Nothing to release: the body was read whole and the connection went back to its pool."""

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}]>"


def _charset(content_type: Optional[str]) -> Optional[str]:
    if not content_type:
        return None
    media, _, params = content_type.partition(";")
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "charset" and value:
            return value.strip().strip("'\"")
    media = media.strip().lower()
    if media.startswith("text/"):
        return "ISO-8859-1"
    if media == "application/json":
        return "utf-8"
    return None


__all__ = ["HeaderPairs", "HeaderValue", "Headers", "Request", "Response"]
