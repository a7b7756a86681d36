"""The libcurl transport (``pip install 'syncworkers[curl]'``): a pool of reusable pycurl easy handles.

The lean path: a request is the project's own :class:`~syncworkers.http.messages.Request`
and the answer its own :class:`~syncworkers.http.messages.Response` (headers parsed on
first use), so nothing of requests is built per transfer; a handle keeps the options
that do not change and is told only what differs from its last transfer.

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

import functools
import ipaddress
import math
import os
import socket
import threading
import time
from urllib.parse import urlsplit
from typing import Any, Callable, Dict, List, Optional, Tuple

import certifi
import pycurl  # type: ignore[import-untyped]
from requests.utils import get_environ_proxies, select_proxy

from ...config.settings import HTTPClientConfig
from ...exceptions import ConfigError, RequestTimeout, TransportError, safe_url
from ..cookies import store_cookies
from ..hosts import bracket_ipv6
from ..messages import Headers, Request, Response
from ..netguard import AddressPolicy, BlockedAddressError
from .base import deadline_exceeded, too_large

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
_FRAMING = frozenset(("content-length", "transfer-encoding"))
#: Seconds a checked address of a host is reused (libcurl's own DNS cache keeps answers as long).
SSRF_VERDICT_SECONDS = 60.0
#: Header lines remembered at most (see _header_lines).
_LINES_MEMO = 512
#: Handle modes (which of HTTPGET / POST / NOBODY the handle is set to).
_GET, _POST, _HEAD = 0, 1, 2


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


class Slot:
    """One pooled easy handle, its reusable body sink and header list, and what it was last set to."""

    __slots__ = ("curl", "sink", "header_lines", "custom", "mode", "generation", "refused", "url", "limits",
                 "encoding", "pinned", "proxy")

    def __init__(self, curl: Any, generation: int) -> None:
        self.curl = curl
        self.sink = _Sink()
        self.header_lines: List[bytes] = []
        self.custom: Optional[str] = None  # CUSTOMREQUEST, if set
        self.mode = _GET  # a new handle makes GET requests
        self.generation = generation
        self.refused: Optional[str] = None  # the address the SSRF guard refused in this transfer
        # The options of the last transfer, set again only when they change.
        self.url = ""
        self.limits: Tuple[int, int, int] = (0, 0, 0)
        self.encoding: Optional[str] = None
        self.pinned: Optional[str] = None
        self.proxy: Optional[str] = None
        curl.setopt(pycurl.WRITEFUNCTION, self.sink.write)
        curl.setopt(pycurl.HEADERFUNCTION, self.header_lines.append)


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
    are shared between them.

    *cookies* is the client's jar: Set-Cookie answers go into it, as requests does.
    :meth:`setup` and :meth:`finish` are the two halves of a transfer, so that the
    multi driver (:mod:`~syncworkers.http.transport.curl_multi`) drives the same
    handles without a thread each.
    """

    name = "curl"

    def __init__(self, config: HTTPClientConfig, cookies: Any, pool_size: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.cookies = cookies
        self.trust_env = config.trust_env
        self.clock = clock
        self._idle: List[Slot] = []  # handles not in a transfer, the most recently used last
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
        self._cap = config.max_response_size
        self._lines: Dict[Any, Tuple[str, bytes]] = {}  # header -> (lowercase name, line)
        #: (host, port) -> (the address the SSRF guard checked, until when it is reused).
        self._verdicts: Dict[Tuple[str, int], Tuple[str, float]] = {}

    # -- handles -----------------------------------------------------------------

    def borrow(self) -> Slot:
        """An idle handle (the most recently used: its connections are the warmest), or a new one."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
            generation, share = self._generation, self._share
        slot = Slot(self._new_handle(share), generation)
        if self._policy.block_private:
            # The last word on every socket libcurl opens (whatever it resolved): refused addresses
            # never get one.
            slot.curl.setopt(pycurl.OPENSOCKETFUNCTION, functools.partial(self._open_socket, slot))
        return slot

    def give_back(self, slot: Slot) -> None:
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

    def multi(self) -> Any:
        """A :class:`~syncworkers.http.transport.curl_multi.CurlMulti` driving this transport's handles."""
        from .curl_multi import CurlMulti

        return CurlMulti(self, clock=self.clock)

    # -- sending -----------------------------------------------------------------

    def send(self, request: Request, *, url: str) -> Response:
        slot = self.borrow()
        try:
            read_bound = self.setup(slot, request, url)
            try:
                slot.curl.perform()
            except pycurl.error as exc:
                raise self.error(exc, slot, request, read_bound, url) from None
            return self.finish(slot, request, url)
        finally:
            self.give_back(slot)

    def setup(self, slot: Slot, request: Request, url: str) -> bool:
        """Set *slot*'s handle up for *request* (only what differs from its last transfer).

        Returns whether the read timeout bounds the whole answer (see the module doc).
        Raises (nothing sent) when the SSRF guard refuses the host.
        """
        c = slot.curl
        target = request.url
        if target != slot.url:
            c.setopt(pycurl.URL, target)
            slot.url = target
        slot.refused = None
        if self._policy.block_private:
            self._pin(slot, target, url, request.method)
        verb = request.method
        body = request.body
        if verb == "HEAD":
            if slot.mode != _HEAD:
                c.setopt(pycurl.NOBODY, 1)
                slot.mode = _HEAD
            _custom(slot, None)
        elif verb == "GET" or body is None and verb in ("DELETE", "OPTIONS"):
            if slot.mode != _GET:
                c.setopt(pycurl.HTTPGET, 1)  # also clears NOBODY
                slot.mode = _GET
            _custom(slot, None if verb == "GET" else verb)
        else:
            if slot.mode == _HEAD:
                c.setopt(pycurl.NOBODY, 0)
            payload = body or b""
            c.setopt(pycurl.POSTFIELDS, payload)
            c.setopt(pycurl.POSTFIELDSIZE_LARGE, len(payload))
            slot.mode = _POST
            # POST stays a plain POST, so that a 301/302/303 turns it into a GET as with requests.
            _custom(slot, None if verb == "POST" else verb)
        lines, encoding = _header_lines(request.headers, self._lines)
        c.setopt(pycurl.HTTPHEADER, lines)
        if encoding != slot.encoding:
            c.setopt(pycurl.ACCEPT_ENCODING, encoding)
            slot.encoding = encoding
        connect, read = request.timeouts
        deadline = request.deadline
        # libcurl counts "no byte for that long" in whole seconds: a read timeout under one second
        # bounds the whole answer instead (then a timeout past it is a read timeout).
        read_bound = read < 1.0 and read < deadline
        total = read if read_bound else deadline
        limits = (max(1, int(min(connect, deadline) * 1000)), max(1, int(total * 1000)), max(1, math.ceil(read)))
        if limits != slot.limits:
            c.setopt(pycurl.CONNECTTIMEOUT_MS, limits[0])
            c.setopt(pycurl.TIMEOUT_MS, limits[1])
            c.setopt(pycurl.LOW_SPEED_TIME, limits[2])
            slot.limits = limits
        if self.trust_env:
            proxy = select_proxy(target, get_environ_proxies(target)) or ""
            if proxy != slot.proxy:
                c.setopt(pycurl.PROXY, proxy)
                slot.proxy = proxy
        slot.sink.reset(self._cap)
        slot.header_lines.clear()
        return read_bound

    def finish(self, slot: Slot, request: Request, url: str) -> Response:
        """The response of *slot*'s finished transfer."""
        c = slot.curl
        if slot.mode == _POST and request.body:
            c.setopt(pycurl.POSTFIELDS, b"")  # drop the handle's reference to the body
        head = _last_head(slot.header_lines)
        chunks = slot.sink.chunks
        content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        status_line = head[0].split(None, 2) if head else []
        response = Response(c.getinfo(pycurl.RESPONSE_CODE), Headers(lines=head), content, request.url,
                            reason=status_line[2].decode("latin-1").strip() if len(status_line) > 2 else "",
                            seconds=c.getinfo(pycurl.TOTAL_TIME), request=request)
        if b"set-cookie:" in b"".join(head).lower():
            store_cookies(self.cookies, response.headers.get_all("Set-Cookie"), request)
        return response

    def _pin(self, slot: Slot, target: str, url: str, method: str) -> None:
        """Resolve and check the host (once per SSRF_VERDICT_SECONDS); libcurl connects to that address
        (CURLOPT_RESOLVE)."""
        parts = urlsplit(target)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        now = self.clock()
        known = self._verdicts.get((host, port))
        if known is not None and known[1] > now:
            checked = known[0]
        else:
            try:
                checked = self._policy.resolve(host, port)
            except TransportError as exc:  # refused, or the name does not resolve: nothing was sent
                raise type(exc)(str(exc), url=url, method=method) from None
            if len(self._verdicts) >= 1024:
                self._verdicts.clear()
            self._verdicts[(host, port)] = (checked, now + SSRF_VERDICT_SECONDS)
        try:
            ipaddress.ip_address(host)
        except ValueError:  # a name: pin it (an address literal is connected to as it is)
            address = f"[{checked}]" if ":" in checked else checked
            entry = f"{host}:{port}:{address}"
            if entry != slot.pinned:
                slot.curl.setopt(pycurl.RESOLVE, [entry])
                slot.pinned = entry

    def _open_socket(self, slot: Slot, purpose: int, address: Any) -> Any:
        ip = str(address.addr[0]).split("%", 1)[0]
        if self._policy.refuses(ip):
            slot.refused = ip
            return pycurl.SOCKET_BAD
        return socket.socket(address.family, address.socktype, address.protocol)

    def error(self, exc: pycurl.error, slot: Slot, request: Request, read_bound: bool,
              url: str) -> Exception:
        """Our exception for a transfer of *slot* that failed with *exc*."""
        method, deadline = request.method, request.deadline
        code = exc.args[0] if exc.args else 0
        text = str(exc.args[1]) if len(exc.args) > 1 else ""
        if slot.refused is not None:
            return BlockedAddressError(f"refused: connecting to {slot.refused}, a private, loopback, link-local "
                                       "or reserved address (block_private_networks is on; allow it with "
                                       "allowed_networks)", url=url, method=method)
        status = slot.curl.getinfo(pycurl.RESPONSE_CODE)
        if code == _TIMEOUT:
            if "too slow" in text or read_bound and "Operation timed out" in text:
                return RequestTimeout("read timeout", url=url, method=method, cause=exc)
            if "onnect" in text or "esolv" in text:
                return RequestTimeout("connect timeout", url=url, method=method, cause=exc)
            return deadline_exceeded(deadline, url, method, exc)
        if code == _WRITE and slot.sink.over or code == _FILESIZE:
            length = None
            if code == _FILESIZE:
                length = Headers(lines=_last_head(slot.header_lines)).get("Content-Length")
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


def _header_lines(headers: Any, memo: Dict[Any, Tuple[str, bytes]]) -> Tuple[List[bytes], Optional[str]]:
    """The request's headers as libcurl takes them, and the Accept-Encoding it must offer (and decode).

    *memo* keeps each header's line: the client's own headers repeat on every request.
    """
    lines: List[bytes] = []
    seen = set()
    encoding: Optional[str] = None
    for pair in headers:
        known = memo.get(pair)
        if known is None:
            name, value = pair
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            known = (name.lower(), f"{name}: {value}".encode("latin-1") if value else f"{name};".encode("latin-1"))
            if len(memo) >= _LINES_MEMO:
                memo.clear()  # per-request values (ids, signatures) pass through: keep it bounded
            memo[pair] = known
        key, line = known
        if key in _FRAMING:
            continue  # libcurl frames the body itself (and drops it when a redirect turns POST into GET)
        if key == "accept-encoding":
            value = pair[1]
            encoding = value if isinstance(value, str) else value.decode("latin-1")
            continue
        seen.add(key)
        lines.append(line)
    for key, raw in _SUPPRESS:
        if key not in seen:
            lines.append(raw)
    return lines, encoding


def _custom(slot: Slot, verb: Optional[str]) -> None:
    """Set CUSTOMREQUEST to *verb*, or clear it (None), touching the handle only on a change."""
    if verb == slot.custom:
        return
    if verb is not None:
        slot.curl.setopt(pycurl.CUSTOMREQUEST, verb)
    else:
        slot.curl.unsetopt(pycurl.CUSTOMREQUEST)
    slot.custom = verb


def _last_head(lines: List[bytes]) -> List[bytes]:
    """The lines of the last response head libcurl saw, status line first.

    (After ``100 Continue`` or through a proxy the lines hold several heads.)
    """
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(b"HTTP/"):
            return lines[i:]
    return list(lines)


def _describe(text: str) -> str:
    return text[:200]


__all__ = ["CurlTransport", "Slot", "SSRF_VERDICT_SECONDS"]
