"""What a call sends: the project's :class:`~syncworkers.http.messages.Request`, built once.

:class:`RequestBuilder` joins a URL to the base URL, prepares it as requests would (IDNA
host, quoted path), merges the session's headers with the call's (each checked), adds
cookies, the body's type and URL credentials in requests' order, and works out the
per-URL pieces (the breaker, the host key) on a URL's first use. A redirect's next
request (:meth:`RequestBuilder.hop_request`) is built here too.
"""

from __future__ import annotations

import base64
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

import requests
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from requests.utils import get_auth_from_url, get_netrc_auth, requote_uri

from ..config.settings import HTTPClientConfig
from ..version import __version__
from .breaker import BreakerRegistry, HostBreaker
from .cookies import cookie_header, has_cookies
from .headers import check_header, header_problem
from .limits import host_key
from .messages import HeaderValue, Request
from .payloads import query_string, request_body
from .redirects import Hop
from .transport import Timeout, as_timeouts
from .urls import join_url

DEFAULT_USER_AGENT = f"syncworkers/{__version__} python-requests/{getattr(requests, '__version__')}"
#: Entries kept in each per-URL cache of a client (prepared URLs, breakers) before it is cleared.
_URL_CACHE_SIZE = 1024
#: A merged header set: lowercase name -> (name as given, value), in order.
_HeaderMap = Dict[str, Tuple[str, HeaderValue]]


class Target(NamedTuple):
    """What a URL a caller asks for comes to, worked out once: the URL sent, its breaker and host key."""

    url: str  #: as requests prepares it (IDNA host, quoted path)
    breaker: HostBreaker
    host: str  #: ``host:port``: what host limits count per
    credentials: bool  #: the URL has userinfo (sent as Basic auth, as requests does)


class _WatchedHeaders(CaseInsensitiveDict):  # type: ignore[type-arg]
    """The session's headers, counting changes so that the client re-reads them only after one."""

    version = 0

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.version += 1

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.version += 1


def new_session(cfg: HTTPClientConfig) -> requests.Session:
    """The requests Session that holds a client's headers (auth, user agent, defaults), cookies and TLS options."""
    session = requests.Session()
    session.trust_env = cfg.trust_env
    session.verify = cfg.verify_ssl
    if cfg.ssl_cert_file:
        session.cert = (cfg.ssl_cert_file, cfg.ssl_key_file) if cfg.ssl_key_file else cfg.ssl_cert_file
    headers = _WatchedHeaders(session.headers)
    headers["User-Agent"] = cfg.user_agent or DEFAULT_USER_AGENT
    # Auth first, so that explicitly given headers (default_headers, per call) win over it.
    if cfg.auth_type == "bearer":
        headers["Authorization"] = f"Bearer {cfg.bearer_token}"
    elif cfg.auth_type == "api_key":
        headers[cfg.api_key_header] = cfg.api_key or ""  # validated: set when auth_type is api_key
    elif cfg.auth_type == "basic":
        headers["Authorization"] = f"Basic {cfg.basic_credentials}"
    headers.update(cfg.default_headers)
    session.headers = headers
    return session


class RequestBuilder:
    """Builds a client's requests (see the module): *session* holds the headers and cookies (its
    headers may change later: they are read again after a change), *breakers* the per-host
    circuit breakers, *timeouts* and *deadline* what each request carries."""

    def __init__(self, config: HTTPClientConfig, session: requests.Session, breakers: BreakerRegistry,
                 timeouts: Timeout, deadline: float) -> None:
        self.config = config
        self.session = session
        self.breakers = breakers
        self.timeouts = as_timeouts(timeouts)
        self.deadline = deadline
        self._targets: Dict[str, Target] = {}
        self._absolute_urls: Dict[str, str] = {}
        self._defaults: Optional[_HeaderMap] = None  # the session's headers, checked (None: read again)
        self._defaults_of: Tuple[Any, int] = (None, -1)  # (headers object, version) they were read from

    def url_for(self, url: str) -> str:
        """An absolute URL: *url* itself, or *url* joined to ``base_url`` (see :func:`~syncworkers.http.urls.join_url`)."""
        absolute = self._absolute_urls.get(url)
        if absolute is None:
            absolute = join_url(self.config.base_url, url)
            remember(self._absolute_urls, url, absolute)
        return absolute

    def target(self, url: str) -> Target:
        """The per-URL pieces of *url*, worked out on its first use."""
        target = self._targets.get(url)
        if target is None:
            target = Target(prepared_url(url), self.breakers.for_url(url), host_key(url),
                             "@" in url.split("?", 1)[0].split("#", 1)[0])
            remember(self._targets, url, target)
        return target

    def build(self, method: str, url: str, *, params: Any = None, headers: Optional[Mapping[str, Any]] = None,
              json: Any = None, data: Any = None, timeout: Optional[Timeout] = None) -> Request:
        """The :class:`~syncworkers.http.messages.Request` a call sends: *url* (absolute) with *params*,
        the session's headers with *headers* over them (None removes one), cookies, the body of
        *json* / *data*, the timeouts and the deadline. Build once, :meth:`send` as often as needed."""
        method = method.upper()
        target = self.target(url)
        sent_url = target.url
        session = self.session
        if session.params or session.auth is not None:
            return self._by_requests(method, url, params, headers, json, data, timeout)
        if params:
            sent_url = with_query(sent_url, query_string(params))
        merged = self._default_headers()
        copied = False
        if headers:
            merged, copied = dict(merged), True
            for name, value in headers.items():
                if value is None:  # None removes a session header, as in requests
                    merged.pop(name.lower(), None)
                else:
                    check_header(name, value)
                    merged[name.lower()] = (name, value)
        # requests' order: the session's and the call's headers, cookies, the body's type, auth.
        jar = session.cookies
        if has_cookies(jar):
            cookie = cookie_header(jar, sent_url, {pair[0]: pair[1] for pair in merged.values()})
            if cookie is not None:
                if not copied:
                    merged, copied = dict(merged), True
                merged["cookie"] = ("Cookie", cookie)
        body, content_type = request_body(data, json) if data is not None or json is not None else (None, None)
        if content_type is not None and "content-type" not in merged:
            if not copied:
                merged, copied = dict(merged), True
            merged["content-type"] = ("Content-Type", content_type)
        credentials = get_netrc_auth(url) if session.trust_env else None
        if credentials is None and target.credentials:
            credentials = get_auth_from_url(sent_url)
        if credentials is not None and any(credentials):
            if not copied:
                merged, copied = dict(merged), True
            merged["authorization"] = ("Authorization", basic_auth(*credentials))
        timeouts = self.timeouts if timeout is None else as_timeouts(timeout)
        return Request(method, sent_url, tuple(merged.values()), body, timeouts, self.deadline)

    def hop_request(self, hop: Hop, previous: Request) -> Request:
        """The request a redirect leads to; cookies from the jar only on the same origin."""
        url = prepared_url(hop.url)
        headers: Dict[str, Tuple[str, HeaderValue]] = {
            name.lower(): (name, value) for name, value in hop.headers.items()}
        headers.pop("cookie", None)  # recomputed for the new URL, or dropped with the origin
        if hop.body is None:
            headers.pop("content-length", None)
            headers.pop("transfer-encoding", None)
        jar = self.session.cookies
        # A cookie jar ignores ports: only the origin rule keeps host A's cookies from host B.
        if not hop.cross_origin and has_cookies(jar):
            cookie = cookie_header(jar, url, {pair[0]: pair[1] for pair in headers.values()})
            if cookie is not None:
                headers["cookie"] = ("Cookie", cookie)
        return previous._replace(method=hop.method, url=url, headers=tuple(headers.values()), body=hop.body)


    def _default_headers(self) -> _HeaderMap:
        """The session's headers, checked, re-read only after they changed (never mutate the result)."""
        headers = self.session.headers
        version = getattr(headers, "version", -1)
        defaults = self._defaults
        if defaults is None or self._defaults_of[0] is not headers or version != self._defaults_of[1] or version < 0:
            merged: _HeaderMap = {}
            for name, value in headers.items():
                problem = header_problem(name, value, caller=False)  # requests' own Connection is fine here
                if problem is not None:
                    raise ValueError(problem)
                merged[name.lower()] = (name, value)
            self._defaults, self._defaults_of = merged, (headers, version)
            defaults = merged
        return defaults

    def _by_requests(self, method: str, url: str, params: Any, headers: Optional[Mapping[str, Any]],
                           json: Any, data: Any, timeout: Optional[Timeout]) -> Request:
        """requests' own preparation, for a session given params or an auth object after construction."""
        for name, value in (headers or {}).items():
            if value is not None:  # None removes a session header, as in requests
                check_header(name, value)  # on requests' own path too: the transport's headers are refused
        prepared = self.session.prepare_request(requests.Request(method, url, headers=headers, params=params,
                                                                 json=json, data=data))
        body, _ = request_body(prepared.body, None)
        timeouts = self.timeouts if timeout is None else as_timeouts(timeout)
        pairs = tuple((str(k), v) for k, v in prepared.headers.items() if k.lower() != "content-length")
        return Request(method, prepared.url or url, pairs, body, timeouts, self.deadline)


def remember(cache: Dict[str, Any], key: str, value: Any) -> None:
    if len(cache) >= _URL_CACHE_SIZE:
        cache.clear()  # many distinct URLs (e.g. query strings): keep the cache bounded
    cache[key] = value


def prepared_url(url: str) -> str:
    """*url* as requests sends it (IDNA host, quoted path): its own rule, asked once per URL."""
    prepared = PreparedRequest()
    prepared.prepare_url(url, None)
    return prepared.url or url


def with_query(url: str, query: str) -> str:
    """*url* with *query* added to its query string (before any fragment), as requests adds params."""
    if not query:
        return url
    base, hash_, fragment = url.partition("#")
    joined = f"{base}&{query}" if "?" in base and not base.endswith("?") else (
        f"{base}{query}" if base.endswith("?") else f"{base}?{query}")
    return requote_uri(joined + hash_ + fragment)


def basic_auth(user: str, password: str) -> str:
    """An ``Authorization`` value for Basic auth (Latin-1 credentials, as requests encodes them)."""
    token = base64.b64encode(f"{user}:{password}".encode("latin-1")).decode("ascii")
    return f"Basic {token}"


__all__ = ["DEFAULT_USER_AGENT", "RequestBuilder", "Target", "new_session"]
