"""The libcurl transport (``pip install 'syncworkers[curl]'``): a pool of reusable pycurl easy handles.

libcurl releases the GIL for the whole transfer and keeps each handle's
connections alive between requests, so a request on a pooled handle costs
little more than the wire. A transfer borrows an idle handle (or makes one) and
gives it back; the pool keeps as many idle handles as connections may stay
idle. Handles share DNS answers and TLS sessions, never connections: libcurl's
shared connection cache is not safe between concurrent threads (a known libcurl
bug; it crashes the process under load). Every semantic of the requests transport holds:
(connect, read) timeouts and the total deadline (``CURLOPT_TIMEOUT_MS``), TLS
verification with certifi's bundle (or the given CA bundle) and client
certificates, proxies only with ``trust_env``, no redirects (HTTPClient follows them), the
response-size cap (a write callback that aborts), and the same exceptions.

libcurl has no per-read timeout: the read timeout is "no byte for that many
seconds" (``LOW_SPEED_TIME``), counted in whole seconds; one under a second
bounds the whole answer instead. libcurl also sends a request once more, on a
new connection, when a reused keep-alive connection was closed before any byte
of the answer (the server closed it as the request left): requests fails that
attempt and leaves it to the retry policy.
"""

from __future__ import annotations

import datetime
import email.message
import functools
import ipaddress
import math
import os
import socket
import threading
from urllib.parse import urlsplit
from typing import Any, Dict, List, Optional, Tuple

import certifi
import pycurl  # type: ignore[import-untyped]
import requests
from requests.cookies import MockRequest, RequestsCookieJar
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers, get_environ_proxies, select_proxy

from ...config.settings import HTTPClientConfig
from ...exceptions import ConfigError, RequestTimeout, TransportError, safe_url
from ..hosts import bracket_ipv6
from ..netguard import AddressPolicy, BlockedAddressError
from .base import Timeouts, deadline_exceeded, too_large

#: curl error codes, by what they mean here.
_TIMEOUT = pycurl.E_OPERATION_TIMEDOUT
_FILESIZE = pycurl.E_FILESIZE_EXCEEDED
_WRITE = pycurl.E_WRITE_ERROR
_BAD_URL = (pycurl.E_UNSUPPORTED_PROTOCOL, pycurl.E_URL_MALFORMAT)
_TLS = {getattr(pycurl, name) for name in (
    "E_SSL_CONNECT_ERROR", "E_PEER_FAILED_VERIFICATION", "E_SSL_CACERT", "E_SSL_CERTPROBLEM",
    "E_SSL_CIPHER", "E_SSL_CACERT_BADFILE", "E_SSL_ENGINE_NOTFOUND", "E_SSL_ENGINE_SETFAILED",
    "E_SSL_SHUTDOWN_FAILED", "E_SSL_CRL_BADFILE", "E_SSL_ISSUER_ERROR", "E_SSL_PINNEDPUBKEYNOTMATCH",
    "E_SSL_INVALIDCERTSTATUS") if hasattr(pycurl, name)}
_HTTP = pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS
#: Headers libcurl would add on its own unless the request names them (an empty value drops them).
_SUPPRESS = (("accept", b"Accept:"), ("content-type", b"Content-Type:"), ("expect", b"Expect:"))
_FRAMING = ("content-length", "transfer-encoding")


class _Sink:
    """Collects a response body; aborts the transfer (returns 0) past the size cap."""

    __slots__ = ("chunks", "size", "cap", "over")

    def __init__(self) -> None:
        self.chunks: List[bytes] = []
        self.size = 0
        self.cap = 0
        self.over = False

    def reset(self, cap: int) -> None:
        self.chunks = []
        self.size = 0
        self.cap = cap
        self.over = False

    def write(self, data: bytes) -> Optional[int]:
        self.size += len(data)
        if self.size > self.cap:
            self.over = True
            return 0  # fewer bytes than given: libcurl aborts with CURLE_WRITE_ERROR
        self.chunks.append(data)
        return None


class _Slot:
    """One pooled easy handle, with its reusable body sink and header list."""

    __slots__ = ("curl", "sink", "header_lines", "custom", "head", "generation", "refused")

    def __init__(self, curl: Any, generation: int) -> None:
        self.curl = curl
        self.sink = _Sink()
        self.header_lines: List[bytes] = []
        self.custom = False  # CUSTOMREQUEST is set (and must be cleared for GET/POST/HEAD)
        self.head = False  # NOBODY is set (and must be cleared before a POST)
        self.generation = generation
        self.refused: Optional[str] = None  # the address the SSRF guard refused in this transfer
        curl.setopt(pycurl.WRITEFUNCTION, self.sink.write)
        curl.setopt(pycurl.HEADERFUNCTION, self.header_lines.append)


class _Raw:
    """What ``Response.raw`` must offer HTTPClient's retry bookkeeping (urllib3 ``Retry``)."""

    __slots__ = ("status",)

    def __init__(self, status: int) -> None:
        self.status = status

    def get_redirect_location(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


def _new_share() -> Any:
    """A share of DNS answers and TLS sessions between the handles of one transport.

    (Not connections: CURL_LOCK_DATA_CONNECT is unsafe between concurrent threads.)
    """
    share = pycurl.CurlShare()
    for data in (pycurl.LOCK_DATA_DNS, pycurl.LOCK_DATA_SSL_SESSION):
        share.setopt(pycurl.SH_SHARE, data)
    return share


class CurlTransport:
    """Sends on pooled pycurl easy handles, one transfer per handle at a time; DNS and TLS sessions
    are shared between them."""

    name = "curl"

    def __init__(self, config: HTTPClientConfig, session: requests.Session, pool_size: int,
                 clock: Any = None) -> None:
        self.config = config
        self.cookies = session.cookies
        self.trust_env = config.trust_env
        self._idle: List[_Slot] = []  # handles not in a transfer, the most recently used last
        self._lock = threading.Lock()
        self._generation = 0  # bumped by close(): handles of an older one are closed, not pooled
        self._share = _new_share()
        max_idle = config.max_keepalive_connections
        self._max_idle = max(pool_size, 1) if max_idle is None else max_idle
        # A handle holds at most one idle connection per host, so idle handles bound idle connections.
        # (With none allowed, handles forbid reuse and the pool keeps pool_size of them.)
        self._keep = self._max_idle or max(pool_size, 1)
        verify = config.verify_ssl
        self._ca: Optional[str] = None
        if verify is True:
            # requests' order: REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE with trust_env, else certifi.
            env_ca = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                      if config.trust_env else None)
            self._ca = env_ca or certifi.where()
        elif isinstance(verify, str):
            self._ca = verify
        self._verify = verify is not False
        self._policy = AddressPolicy.of(config)

    # -- handles -----------------------------------------------------------------

    def _borrow(self) -> _Slot:
        """An idle handle (the most recently used: its connections are the warmest), or a new one."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
            generation, share = self._generation, self._share
        slot = _Slot(self._new_handle(share), generation)
        if self._policy.block_private:
            # The last word on every socket libcurl opens (whatever it resolved): refused addresses
            # never get one.
            slot.curl.setopt(pycurl.OPENSOCKETFUNCTION, functools.partial(self._open_socket, slot))
        return slot

    def _give_back(self, slot: _Slot) -> None:
        """Pool the handle again, or close it (and its connections) when the pool is full or closed."""
        with self._lock:
            if slot.generation == self._generation and len(self._idle) < self._keep:
                self._idle.append(slot)
                return
        slot.curl.close()

    def _new_handle(self, share: Any) -> Any:
        cfg = self.config
        c = pycurl.Curl()
        c.setopt(pycurl.NOSIGNAL, 1)  # timeouts without SIGALRM: safe in threads
        c.setopt(pycurl.TCP_NODELAY, 1)
        c.setopt(pycurl.SHARE, share)
        c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)  # as requests speaks
        c.setopt(pycurl.PROTOCOLS, _HTTP)
        c.setopt(pycurl.REDIR_PROTOCOLS, _HTTP)
        c.setopt(pycurl.FOLLOWLOCATION, 0)  # HTTPClient follows redirects (syncworkers.http.redirects)
        c.setopt(pycurl.MAXFILESIZE_LARGE, cfg.max_response_size)
        c.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        if self._max_idle == 0:
            c.setopt(pycurl.FORBID_REUSE, 1)
        c.setopt(pycurl.MAXAGE_CONN, max(1, int(cfg.keepalive_expiry)))
        if self._verify:
            c.setopt(pycurl.SSL_VERIFYPEER, 1)
            c.setopt(pycurl.SSL_VERIFYHOST, 2)
            if self._ca is not None:
                c.setopt(pycurl.CAPATH if os.path.isdir(self._ca) else pycurl.CAINFO, self._ca)
        else:
            c.setopt(pycurl.SSL_VERIFYPEER, 0)
            c.setopt(pycurl.SSL_VERIFYHOST, 0)
        if cfg.ssl_cert_file:
            c.setopt(pycurl.SSLCERT, cfg.ssl_cert_file)
            if cfg.ssl_key_file:
                c.setopt(pycurl.SSLKEY, cfg.ssl_key_file)
        if not self.trust_env:
            c.setopt(pycurl.PROXY, "")  # libcurl would read http_proxy & co. on its own
        return c

    # -- sending -----------------------------------------------------------------

    def send(self, request: PreparedRequest, *, timeouts: Timeouts, deadline: float,
             url: str, method: str) -> requests.Response:
        slot = self._borrow()
        try:
            return self._transfer(slot, request, timeouts, deadline, url, method)
        finally:
            self._give_back(slot)

    def _transfer(self, slot: _Slot, request: PreparedRequest, timeouts: Timeouts, deadline: float,
                  url: str, method: str) -> requests.Response:
        c = slot.curl
        target = request.url or url
        c.setopt(pycurl.URL, target)
        slot.refused = None
        if self._policy.block_private:
            self._pin(c, target, url, method)
        body = _body_bytes(request.body)
        verb = (request.method or method).upper()
        if verb == "HEAD":
            c.setopt(pycurl.NOBODY, 1)
            slot.head = True
            _custom(slot, None)
        elif verb == "GET" or body is None and verb in ("DELETE", "OPTIONS"):
            c.setopt(pycurl.HTTPGET, 1)  # also clears NOBODY
            slot.head = False
            _custom(slot, None if verb == "GET" else verb)
        else:
            if slot.head:
                c.setopt(pycurl.NOBODY, 0)
                slot.head = False
            payload = body or b""
            c.setopt(pycurl.POSTFIELDS, payload)
            c.setopt(pycurl.POSTFIELDSIZE_LARGE, len(payload))
            # POST stays a plain POST, so that a 301/302/303 turns it into a GET as with requests.
            _custom(slot, None if verb == "POST" else verb)
        encoding = self._set_headers(c, request.headers)
        c.setopt(pycurl.ACCEPT_ENCODING, encoding)
        connect, read = timeouts
        c.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(min(connect, deadline) * 1000)))
        # libcurl counts "no byte for that long" in whole seconds: a read timeout under one second
        # bounds the whole answer instead (then a timeout past it is a read timeout).
        total = read if read < 1.0 and read < deadline else deadline
        c.setopt(pycurl.TIMEOUT_MS, max(1, int(total * 1000)))
        c.setopt(pycurl.LOW_SPEED_TIME, max(1, math.ceil(read)))
        if self.trust_env:
            proxy = select_proxy(target, get_environ_proxies(target))
            c.setopt(pycurl.PROXY, proxy or "")
        sink = slot.sink
        cap = self.config.max_response_size
        sink.reset(cap)
        lines = slot.header_lines
        lines.clear()
        try:
            c.perform()
        except pycurl.error as exc:
            raise self._error(exc, c, slot, deadline, total < deadline, url, method) from None
        finally:
            c.setopt(pycurl.POSTFIELDS, b"")  # drop the reference to the body
        status = c.getinfo(pycurl.RESPONSE_CODE)
        response = requests.Response()
        response.status_code = status
        response.reason, response.headers, cookies = _parse_head(lines)
        response._content = b"".join(sink.chunks)
        response._content_consumed = True
        response.url = c.getinfo(pycurl.EFFECTIVE_URL)
        response.encoding = get_encoding_from_headers(response.headers)
        response.raw = _Raw(status)
        response.request = request
        response.elapsed = datetime.timedelta(seconds=c.getinfo(pycurl.TOTAL_TIME))
        if cookies:
            self._store_cookies(cookies, request, response)
        return response

    def _pin(self, c: Any, target: str, url: str, method: str) -> None:
        """Resolve and check the host once; libcurl connects to that address (CURLOPT_RESOLVE)."""
        parts = urlsplit(target)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        try:
            checked = self._policy.resolve(host, port)
        except TransportError as exc:  # refused, or the name does not resolve: nothing was sent
            raise type(exc)(str(exc), url=url, method=method) from None
        try:
            ipaddress.ip_address(host)
        except ValueError:  # a name: pin it (an address literal is connected to as it is)
            address = f"[{checked}]" if ":" in checked else checked
            c.setopt(pycurl.RESOLVE, [f"{host}:{port}:{address}"])

    def _open_socket(self, slot: _Slot, purpose: int, address: Any) -> Any:
        ip = str(address.addr[0]).split("%", 1)[0]
        if self._policy.refuses(ip):
            slot.refused = ip
            return pycurl.SOCKET_BAD
        return socket.socket(address.family, address.socktype, address.protocol)

    @staticmethod
    def _set_headers(c: Any, headers: Any) -> Optional[str]:
        """Pass the prepared headers; return the Accept-Encoding libcurl must offer (and decode)."""
        lines: List[bytes] = []
        seen = set()
        encoding: Optional[str] = None
        store = getattr(headers, "_store", None)  # CaseInsensitiveDict: lower -> (name, value)
        items = store.items() if store is not None else ((k.lower(), (k, v)) for k, v in headers.items())
        for key, (name, value) in items:
            if key in _FRAMING:
                continue  # libcurl frames the body itself (and drops it when a redirect turns POST into GET)
            if key == "accept-encoding":
                encoding = value if isinstance(value, str) else value.decode("latin-1")
                continue
            seen.add(key)
            line = f"{name}: {value}" if isinstance(value, str) else f"{name}: {value.decode('latin-1')}"
            lines.append(line.encode("latin-1") if value else f"{name};".encode("latin-1"))
        for key, raw in _SUPPRESS:
            if key not in seen:
                lines.append(raw)
        c.setopt(pycurl.HTTPHEADER, lines)
        return encoding

    def _store_cookies(self, values: List[str], request: PreparedRequest, response: requests.Response) -> None:
        """Keep Set-Cookie answers in the session's jar, as requests does."""
        msg = email.message.Message()
        for value in values:
            msg["Set-Cookie"] = value
        fake = _CookieResponse(msg)
        jar = RequestsCookieJar()
        jar.extract_cookies(fake, MockRequest(request))  # type: ignore[arg-type]
        response.cookies = jar
        self.cookies.update(jar)

    def _error(self, exc: pycurl.error, c: Any, slot: _Slot, deadline: float, read_bound: bool,
               url: str, method: str) -> Exception:
        code = exc.args[0] if exc.args else 0
        text = str(exc.args[1]) if len(exc.args) > 1 else ""
        if slot.refused is not None:
            return BlockedAddressError(f"refused: connecting to {slot.refused}, a private, loopback, link-local "
                                       "or reserved address (block_private_networks is on; allow it with "
                                       "allowed_networks)", url=url, method=method)
        status = c.getinfo(pycurl.RESPONSE_CODE)
        if code == _TIMEOUT:
            if "too slow" in text or read_bound and "Operation timed out" in text:
                return RequestTimeout("read timeout", url=url, method=method, cause=exc)
            if "onnect" in text or "esolv" in text:
                return RequestTimeout("connect timeout", url=url, method=method, cause=exc)
            return deadline_exceeded(deadline, url, method, exc)
        if code == _WRITE and slot.sink.over or code == _FILESIZE:
            length = None
            if code == _FILESIZE:
                _, head, _ = _parse_head(slot.header_lines)
                length = head.get("Content-Length")
            return too_large(slot.sink.cap, url, method, status, length)
        text = bracket_ipv6(text, url)  # libcurl prints an IPv6 address bare: "::1:8080"
        if code in _TLS:
            return TransportError(f"TLS error: {_describe(text)}", url=url, method=method, cause=exc)
        if code in _BAD_URL and "HTTP/0.9" not in text:  # (not an answer that is no HTTP at all)
            return ConfigError(f"invalid URL {safe_url(url)!r}")
        return TransportError(f"connection failed: {_describe(text)}", url=url, method=method, cause=exc)

    def close(self) -> None:
        """Close every idle handle, and with it its connections; a handle in a transfer is closed
        when the transfer gives it back. (Later requests get new handles.)"""
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
            # The old share is freed with the last handle that uses it.
            self._share = _new_share()
        for slot in idle:
            slot.curl.close()


def _custom(slot: _Slot, verb: Optional[str]) -> None:
    """Set CUSTOMREQUEST to *verb*, or clear it (None), touching the handle only on a change."""
    if verb is not None:
        slot.curl.setopt(pycurl.CUSTOMREQUEST, verb)
        slot.custom = True
    elif slot.custom:
        slot.curl.unsetopt(pycurl.CUSTOMREQUEST)
        slot.custom = False


class _CookieResponse:
    """The little of an http.client response that ``CookieJar.extract_cookies`` reads."""

    def __init__(self, headers: email.message.Message) -> None:
        self._headers = headers

    def info(self) -> email.message.Message:
        return self._headers


def _parse_head(lines: List[bytes]) -> Tuple[str, "CaseInsensitiveDict[str]", List[str]]:
    """(reason, headers, Set-Cookie values) of the last response head libcurl saw.

    (After redirects and ``100 Continue`` the lines hold several heads.)
    """
    start = 0
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(b"HTTP/"):
            start = i
            break
    headers: "CaseInsensitiveDict[str]" = CaseInsensitiveDict()
    reason = ""
    cookies: List[str] = []
    if lines:
        parts = lines[start].split(None, 2)
        reason = parts[2].decode("latin-1").strip() if len(parts) > 2 else ""
    store: Dict[str, Tuple[str, str]] = headers._store
    for line in lines[start + 1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key = name.decode("latin-1").strip()
        text = value.decode("latin-1").strip()
        lower = key.lower()
        if lower == "set-cookie":
            cookies.append(text)
        known = store.get(lower)
        # Repeated fields are joined as urllib3 joins them.
        store[lower] = (key, text) if known is None else (known[0], f"{known[1]}, {text}")
    return reason, headers, cookies


def _body_bytes(body: Any) -> Optional[bytes]:
    """The prepared body as bytes (requests leaves str, file objects or iterables there too)."""
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("latin-1")  # as http.client encodes a str body
    if hasattr(body, "read"):
        data = body.read()
        return data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return b"".join(chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk) for chunk in body)


def _describe(text: str) -> str:
    return text[:200]


__all__ = ["CurlTransport"]
