"""Paginators: which request fetches the next page of a poll, computed without I/O.

A paginator is a small strategy object (like tenacity's ``wait``/``stop``): it
gives the query parameters of the first page and, from a :class:`Page` just
fetched, the :class:`PageRequest` of the next one or None to stop. Paginators
keep no state between calls (the position travels in the request), so one
instance may serve many pollers and threads. The poller does the fetching,
loop detection (a request seen twice in one tick) and the ``max_pages`` cap.
"""

from __future__ import annotations

from dataclasses import dataclass
import re
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, runtime_checkable
from urllib.parse import parse_qsl, urljoin, urlsplit

from ..config.defaults import MAX_COUNT
from ..config.validators import checked, count, flag
from ..exceptions import ConfigError, PaginationError
from ..http.hosts import origin

Params = Tuple[Tuple[str, str], ...]

#: Pages one tick walks at most unless ``PollerWorker(max_pages=...)`` says otherwise.
DEFAULT_MAX_PAGES = 100


@dataclass(frozen=True)
class PageRequest:
    """One page to fetch: a URL and the query parameters added to it (hashable, for loop detection)."""

    url: str
    params: Params = ()

    def with_params(self, **updates: Any) -> "PageRequest":
        """A copy whose parameters named in *updates* are replaced in place (None removes one)."""
        params: List[Tuple[str, str]] = []
        done = set()
        for key, value in self.params:
            if key not in updates:
                params.append((key, value))
            elif key not in done and updates[key] is not None:
                params.append((key, _text(updates[key])))
            done.add(key)
        params += [(k, _text(v)) for k, v in updates.items() if k not in done and v is not None]
        return PageRequest(self.url, tuple(params))

    def param(self, name: str) -> Optional[str]:
        """The last value of parameter *name*, from ``params`` or else the URL's own query."""
        for key, value in reversed(self.params):
            if key == name:
                return value
        for key, value in reversed(parse_qsl(urlsplit(self.url).query, keep_blank_values=True)):
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class Page:
    """What a paginator sees of a fetched page.

    ``items`` are the page's items: what ``data_extractor`` returned, else the
    body when it is a JSON array, else None (unknown). ``url`` is the URL the
    answer came from (after redirects), against which relative links resolve.
    """

    request: PageRequest
    status: int
    headers: Mapping[str, str]
    body: Any
    items: Optional[Sequence[Any]]
    url: str = ""
    number: int = 1


@runtime_checkable
class Paginator(Protocol):
    """The protocol every paginator implements (two methods, no I/O)."""

    def first_params(self) -> Mapping[str, Any]:
        """Query parameters of the first page of a tick (``{}`` for none)."""
        ...

    def next_request(self, page: Page) -> Optional[PageRequest]:
        """The request of the page after *page*, or None when *page* was the last."""
        ...


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _is_empty(page: Page) -> bool:
    return page.items is not None and len(page.items) == 0


def lookup(data: Any, path: str) -> Any:
    """The value at dotted *path* in nested dicts (list indexes allowed: ``data.0.id``); None if absent."""
    current = data
    for part in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(part)
        elif isinstance(current, list) and part.lstrip("-").isdigit():
            index = int(part)
            current = current[index] if -len(current) <= index < len(current) else None
        else:
            return None
        if current is None:
            return None
    return current


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    result: int = checked(name, value, count(minimum=minimum, maximum=MAX_COUNT, text=False))
    return result


def _name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}", {name: "must be a non-empty string"})
    return value


@dataclass(frozen=True)
class LinkHeaderPaginator:
    """Follow the ``Link: <...>; rel="next"`` header (RFC 8288); stop when there is none or a page is empty.

    A relative link resolves against the URL of the page that carried it. The
    next URL replaces the whole request (it carries its own query). A link to
    another origin (scheme, host, port) is refused with a PaginationError unless
    ``same_origin=False``: following it would send this poller's credentials there.
    """

    rel: str = "next"
    same_origin: bool = True

    def __post_init__(self) -> None:
        _name("rel", self.rel)
        checked("same_origin", self.same_origin, flag)  # "false" would be true: credentials to any origin

    def first_params(self) -> Mapping[str, Any]:
        return {}

    def next_request(self, page: Page) -> Optional[PageRequest]:
        if _is_empty(page):
            return None
        target = next_link(page.headers, page.url or page.request.url, self.rel)
        if target is None:
            return None
        base = page.url or page.request.url
        if self.same_origin and origin(target) != origin(base):
            raise PaginationError(f"the {self.rel!r} link leads to another origin; refused",
                                  url=target)
        return PageRequest(target)


def next_link(headers: Mapping[str, str], base_url: str, rel: str = "next") -> Optional[str]:
    """The absolute URL of the ``Link`` header entry with relation *rel*, or None."""
    value = _header(headers, "Link")
    if not value:
        return None
    for url, params in parse_links(value):
        relations = params.get("rel", "").lower().split()
        if rel.lower() in relations and url:
            return urljoin(base_url, url)
    return None


_LINK = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,\s=]+(?:\s*=\s*(?:\"[^\"]*\"|[^;,]*))?)*)")
_PARAM = re.compile(r";\s*([^;,\s=]+)(?:\s*=\s*(?:\"([^\"]*)\"|([^;,]*)))?")


def parse_links(value: str) -> List[Tuple[str, Dict[str, str]]]:
    """The links of an RFC 8288 ``Link`` header: ``[(url, {param: value})]`` (names lowercased)."""
    links = []
    for match in _LINK.finditer(value):
        params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else (m.group(3) or "").strip())
                  for m in _PARAM.finditer(match.group(2))}
        links.append((match.group(1).strip(), params))
    return links


@dataclass(frozen=True)
class CursorPaginator:
    """Send the cursor the previous page returned as ``param``; stop when there is none or a page is empty.

    The cursor is read at the dotted ``cursor_path`` of the JSON body
    (``meta.next_cursor``), or from the response header ``cursor_header`` when
    given. An empty string, null or false cursor means "no more pages".
    """

    cursor_path: Optional[str] = "meta.next_cursor"
    param: str = "cursor"
    cursor_header: Optional[str] = None

    def __post_init__(self) -> None:
        _name("param", self.param)
        if self.cursor_header is not None:
            _name("cursor_header", self.cursor_header)
        elif self.cursor_path is not None:
            _name("cursor_path", self.cursor_path)
        else:
            raise ConfigError("CursorPaginator needs a cursor_path or a cursor_header",
                              {"cursor_path": "give cursor_path or cursor_header"})

    def first_params(self) -> Mapping[str, Any]:
        return {}

    def next_request(self, page: Page) -> Optional[PageRequest]:
        if _is_empty(page):
            return None
        if self.cursor_header is not None:
            cursor: Any = _header(page.headers, self.cursor_header)
        else:
            cursor = lookup(page.body, self.cursor_path or "")
        if cursor is None or cursor is False or cursor == "" or isinstance(cursor, (dict, list)):
            return None
        return page.request.with_params(**{self.param: cursor})


@dataclass(frozen=True)
class OffsetPaginator:
    """``limit`` items per page, ``offset`` advancing by the items received; stop on an empty or short page.

    The page's items must be known: a JSON array body, or a ``data_extractor``.
    A page whose items are unknown ends the walk.
    """

    limit: int = 100
    limit_param: str = "limit"
    offset_param: str = "offset"
    start: int = 0

    def __post_init__(self) -> None:
        _positive_int("limit", self.limit)
        _positive_int("start", self.start, minimum=0)
        _name("limit_param", self.limit_param)
        _name("offset_param", self.offset_param)

    def first_params(self) -> Mapping[str, Any]:
        return {self.limit_param: self.limit, self.offset_param: self.start}

    def next_request(self, page: Page) -> Optional[PageRequest]:
        if page.items is None or len(page.items) < self.limit:
            return None
        offset = _int_param(page.request, self.offset_param, self.start)
        return page.request.with_params(**{self.offset_param: offset + len(page.items)})


@dataclass(frozen=True)
class PageNumberPaginator:
    """``param`` = start, start+1, ...; stop on an empty page, or a short one when ``page_size`` is given.

    ``page_size_param`` (with ``page_size``) also sends the page size.
    """

    param: str = "page"
    start: int = 1
    page_size: Optional[int] = None
    page_size_param: Optional[str] = None

    def __post_init__(self) -> None:
        _name("param", self.param)
        _positive_int("start", self.start, minimum=0)
        if self.page_size is not None:
            _positive_int("page_size", self.page_size)
        if self.page_size_param is not None:
            _name("page_size_param", self.page_size_param)
            if self.page_size is None:
                raise ConfigError("page_size_param needs a page_size", {"page_size": "needed by page_size_param"})

    def first_params(self) -> Mapping[str, Any]:
        params: Dict[str, Any] = {self.param: self.start}
        if self.page_size_param is not None:
            params[self.page_size_param] = self.page_size
        return params

    def next_request(self, page: Page) -> Optional[PageRequest]:
        if page.items is None or len(page.items) == 0:
            return None
        if self.page_size is not None and len(page.items) < self.page_size:
            return None
        number = _int_param(page.request, self.param, self.start)
        return page.request.with_params(**{self.param: number + 1})


def _int_param(request: PageRequest, name: str, default: int) -> int:
    value = request.param(name)
    try:
        return default if value is None else int(value)
    except ValueError:
        return default


def first_request(url: str, params: Any, extra: Mapping[str, Any]) -> PageRequest:
    """The first page's request: the poller's *params* (mapping, pairs or query string) with *extra* set."""
    pairs: List[Tuple[str, str]] = []
    if isinstance(params, Mapping):
        for key, value in params.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            pairs += [(_text(key), _text(v)) for v in values if v is not None]
    elif isinstance(params, (str, bytes)):
        text = params.decode() if isinstance(params, bytes) else params
        pairs = parse_qsl(text, keep_blank_values=True)
    elif params is not None:
        pairs = [(_text(k), _text(v)) for k, v in params]
    return PageRequest(url, tuple(pairs)).with_params(**dict(extra))


__all__ = [
    "DEFAULT_MAX_PAGES",
    "CursorPaginator",
    "LinkHeaderPaginator",
    "OffsetPaginator",
    "Page",
    "PageNumberPaginator",
    "PageRequest",
    "Paginator",
    "first_request",
    "lookup",
    "next_link",
]
