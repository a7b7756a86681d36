"""What counts as a secret and how it is masked: one rule, one mask (``***``).

- A header, field or parameter is secret when its name contains ``auth``, ``token``,
  ``key``, ``secret``, ``signature``, ``password`` (or ``passwd``) or ``cookie``.
- Credentials are recognised by their shape: ``Bearer x``, ``Basic x``, ``whsec_x``,
  ``name=value`` and ``'name': 'value'`` with a secret name, URL userinfo.
- A URL path segment that is itself a secret is masked: see :func:`is_token_segment`
  (Slack and Discord tokens), and every secret part of a known webhook URL shape
  (Slack, Discord, Microsoft Teams).

That rule needs no registration: the module functions (:func:`redact_text`,
:func:`redact`, :func:`is_secret_key`, ...) apply it. What only its owner knows —
the values of a bearer token, an API key or a signing secret, the header names listed
in ``HTTPClientConfig(secret_headers=...)`` — a :class:`Redactor` holds: whoever
configured those secrets (an HTTP client, a worker) builds one and passes it to what
prints (its logger, its reprs, urllib3's log filter). There is no process-wide registry.

:func:`safe_url` is how every URL is printed: no userinfo, query or fragment, secret
segments masked. Everything here is pure and precompiled.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Mapping
from typing import Any, Dict, FrozenSet, Iterable, NamedTuple, Optional, Pattern, Set, Union
from urllib.parse import urlsplit, urlunsplit

from ..http.hosts import netloc

#: What replaces a secret.
MASK = "***"
#: Secret values shorter than this are ignored: masking them would garble ordinary text.
MIN_SECRET_LENGTH = 4
#: A URL path segment at least this long, of letters, digits, ``_`` and ``-``, may be a secret
#: (the token of a Slack or Discord webhook URL); :func:`is_token_segment` decides.
SECRET_SEGMENT_MIN_LENGTH = 20
#: Parts of a name that make it secret (compared lower-case).
SECRET_NAME_PARTS = ("auth", "token", "key", "secret", "signature", "password", "passwd", "cookie")

_SECRET_NAME_RE = re.compile("|".join(SECRET_NAME_PARTS))
_SEGMENT_RE = re.compile(rf"[A-Za-z0-9_-]{{{SECRET_SEGMENT_MIN_LENGTH},}}", re.ASCII)

# Value characters stop at quotes and backslashes so that masking JSON text keeps it valid.
_AUTH_RE = re.compile(r"\b(Bearer|Basic)(\s+)([A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE)
_WHSEC_RE = re.compile(r"whsec_[A-Za-z0-9+/=_\-]+")
# key=value (query strings, logfmt): masked when the key looks secret. The value stops at
# "?" and "=" so that "a=1?token=x" still reaches "token".
_KEY_VALUE_RE = re.compile(r"(?<![\w-])([A-Za-z][\w\-]*)=([^\s&,;?=\"'\\]+)")
# "Name: value" as in raw HTTP text, masked to the end of the line. Only header-like names
# (with "-" or "_", or a bare well-known one) count, so that prose such as "bad token: x" stays.
_HEADER_RE = re.compile(r"(?<![\w-])([A-Za-z][\w-]{0,127}):[ \t]*[^\r\n\"'\\]+")
_BARE_HEADERS = frozenset({"authorization", "cookie", "apikey"})
_USERINFO_RE = re.compile(r"(?<=://)[^\s/?#@\"'\\]+@")
# 'key': 'value' and "key": "value" (a dict's repr or JSON put into a message), masked when the
# key looks secret. The value runs to its closing quote, escaped quotes included.
_QUOTED_ITEM_RE = re.compile(r"""(['"])([A-Za-z][\w\-]*)\1(\s*:\s*)(['"])((?:\\.|(?!\4)[^\\\r\n])*)\4""")
# A URL in free text, up to a space, a quote or an angle bracket.
_URL_RE = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^\s\"'<>]+")
#: What may follow a URL in a sentence without being part of it.
_TRAILING_PUNCTUATION = ".,:;!?)]}"

# -- secret path segments ---------------------------------------------------------------------

#: Webhook URLs whose path is the credential: (host, the segment after which the secret part
#: starts, how many segments after it are ids that stay shown).
_WEBHOOK_SHAPES = (
    (re.compile(r"hooks\.slack\.com"), "services", 2),  # /services/T…/B…/<token>
    (re.compile(r"(?:ptb\.|canary\.)?discord(?:app)?\.com"), "webhooks", 1),  # /api/webhooks/<id>/<token>
    (re.compile(r"[\w-]+\.webhook\.office\.com"), "webhookb2", 0),  # Teams: /webhookb2/<ids>/IncomingWebhook/<ids>
)
#: Words of a webhook URL shape that are not secrets.
_SHAPE_WORDS = frozenset({"IncomingWebhook"})


def is_token_segment(segment: str) -> bool:
    """True for a URL path segment that is itself a secret.

    At least :data:`SECRET_SEGMENT_MIN_LENGTH` letters, digits, ``_`` or ``-`` that look
    random: letters mixed with digits, or letters alone whose case changes as a random
    string's does (capitals a third to two thirds of them, switching case often). Words,
    ``CamelCase`` names, slugs and dates stay shown.
    """
    if len(segment) < SECRET_SEGMENT_MIN_LENGTH or not _SEGMENT_RE.fullmatch(segment):
        return False
    letters = [c for c in segment if c.isalpha()]
    if not letters:
        return False  # digits (and separators) only: an id, not a credential
    if any(c.isdigit() for c in segment):
        return True
    upper = sum(c.isupper() for c in letters)
    switches = sum(a.isupper() != b.isupper() for a, b in zip(letters, letters[1:]))
    # Random letters: about half capitals, a case switch every other letter. CamelCase words:
    # a capital per word (a fifth of the letters), two switches per word.
    return len(letters) <= 3 * upper <= 2 * len(letters) and 5 * switches >= 2 * (len(letters) - 1)


def _shape_start(host: str, segments: "list[str]") -> Optional[int]:
    """Index of the first secret segment of a known webhook URL shape on *host*, else None."""
    for pattern, marker, kept in _WEBHOOK_SHAPES:
        if pattern.fullmatch(host):
            try:
                return segments.index(marker) + 1 + kept
            except ValueError:
                return None
    return None


def _mask_path(path: str, host: str = "") -> str:
    """*path* with its secret segments masked (webhook tokens, known webhook URL shapes)."""
    start = _shape_start(host, path.split("/")) if host else None
    if start is None and len(path) <= SECRET_SEGMENT_MIN_LENGTH:
        return path
    segments = path.split("/")
    for i, segment in enumerate(segments):
        if segment and ((start is not None and i >= start and segment not in _SHAPE_WORDS)
                        or is_token_segment(segment)):
            segments[i] = MASK
    return "/".join(segments)


def _mask_url_path(match: "re.Match[str]") -> str:
    url = match.group(0)
    host_at = url.find("://") + 3
    start = url.find("/", host_at)
    if start < 0:
        return url
    end = len(url)
    for sep in "?#":
        found = url.find(sep, start)
        if found >= 0:
            end = min(end, found)
    host = url[host_at:start].rpartition("@")[2].split(":", 1)[0].lower()
    return url[:start] + _mask_path(url[start:end], host) + url[end:]


# -- the rule, with what a Redactor knows ------------------------------------------------------


def _normalise(name: object) -> str:
    return str(name).lower().replace("_", "-")


class _Known(NamedTuple):
    """What a Redactor was told, precompiled; replaced whole, so readers need no lock."""

    secrets: FrozenSet[str] = frozenset()
    secrets_re: Optional[Pattern[str]] = None
    names: FrozenSet[str] = frozenset()  # normalised
    names_re: Optional[Pattern[str]] = None  # "Name: value" for each registered name


_NOTHING = _Known()


def _is_secret_key(key: object, known: _Known) -> bool:
    name = _normalise(key)
    return _SECRET_NAME_RE.search(name) is not None or name in known.names


def _text(text: str, known: _Known) -> str:
    pattern = known.secrets_re
    if pattern is not None:
        text = pattern.sub(MASK, text)
    # Substring tests are far cheaper than a regex pass, and most strings are plain.
    lowered = text.lower()
    if "bearer" in lowered or "basic" in lowered:
        text = _AUTH_RE.sub(_mask_auth, text)
    if "whsec_" in text:
        text = _WHSEC_RE.sub("whsec_" + MASK, text)
    if "=" in text:
        text = _KEY_VALUE_RE.sub(lambda m: f"{m.group(1)}={MASK}" if _is_secret_key(m.group(1), known)
                                 else m.group(0), text)
    if ":" in text:
        mask_header = functools.partial(_mask_header, known=known)
        text = _HEADER_RE.sub(mask_header, text)
        if known.names_re is not None:
            text = known.names_re.sub(mask_header, text)
        if "'" in text or '"' in text:
            text = _QUOTED_ITEM_RE.sub(functools.partial(_mask_quoted_item, known=known), text)
    if "://" in text:
        text = _USERINFO_RE.sub(MASK + "@", text)
        text = _URL_RE.sub(_mask_url_path, text)
    return text


def _mask_auth(match: "re.Match[str]") -> str:
    token = match.group(3)
    # "Basic authentication", "bearer token": an all-lowercase short word is prose, not a credential.
    if token.isalpha() and token.islower() and len(token) < 20:
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{MASK}"


def _mask_header(match: "re.Match[str]", known: _Known) -> str:
    name = match.group(1)
    header_like = "-" in name or "_" in name or name.lower() in _BARE_HEADERS
    if (header_like and _is_secret_key(name, known)) or _normalise(name) in known.names:
        return f"{name}: {MASK}"
    return match.group(0)


def _mask_quoted_item(match: "re.Match[str]", known: _Known) -> str:
    if not _is_secret_key(match.group(2), known):
        return match.group(0)
    quote, key, sep, value_quote = match.group(1, 2, 3, 4)
    return f"{quote}{key}{quote}{sep}{value_quote}{MASK}{value_quote}"


def _redact(value: Any, known: _Known, active: Set[int]) -> Any:
    if isinstance(value, str):
        return _text(value, known)
    if not isinstance(value, (dict, list, tuple, Mapping)):
        return value
    if id(value) in active:
        return "<recursion>"  # a self-referencing structure
    active.add(id(value))
    try:
        if isinstance(value, (dict, Mapping)):
            return {_redact(k, known, active): MASK if _is_secret_key(k, known) else _redact(v, known, active)
                    for k, v in value.items()}
        items = [_redact(v, known, active) for v in value]
        return items if isinstance(value, list) else tuple(items)
    finally:
        active.discard(id(value))


def _output(text: str, known: _Known) -> str:
    text = _text(text, known)
    if "://" in text:
        text = _URL_RE.sub(_shorten_url, text)
    return text


def _shorten_url(match: "re.Match[str]") -> str:
    # A URL in a sentence may be followed by punctuation ("for http://h:8001: 3 failures"):
    # it is not part of the URL, and "8001:" would not parse as a port.
    url = match.group(0)
    end = len(url.rstrip(_TRAILING_PUNCTUATION))
    if url[:end].endswith("://"):  # a scheme named in prose ("redis://, rediss:// or ..."): no URL
        return url
    return (safe_url(url[:end]) or "") + url[end:]


def _credentials(value: str) -> Iterable[str]:
    """*value* of a secret header, and its credential alone when it is ``Scheme credential``."""
    yield value
    parts = value.split()
    if len(parts) == 2:  # "Token abc", "Bearer abc": the credential may be printed without its scheme
        yield parts[1]


class Redactor:
    """The secrets one owner configured, masked on top of the rule every redaction applies.

    Holds secret *values* (a bearer token, an API key, a password, a signing secret:
    masked wherever they appear) and secret header *names* (``secret_headers``: their
    values masked in headers, mappings and ``Name: value`` text). Built by whoever
    configured the secrets and passed to what prints. Safe from any thread; it only grows.
    """

    def __init__(self, secrets: Iterable[Union[str, bytes, None]] = (), names: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._known = _NOTHING
        self.add_names(names)
        for secret in secrets:
            self.add_secret(secret)

    # -- what it knows --------------------------------------------------------------------------

    def add_secret(self, value: Union[str, bytes, None]) -> None:
        """Mask *value* wherever it appears from now on.

        ``None``, empty and very short values are ignored. A ``whsec_`` secret is also
        masked without its prefix, the form the signing code decodes.
        """
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                return  # cannot appear verbatim in text
        if not value or len(value) < MIN_SECRET_LENGTH:
            return
        new = {value}
        if value.startswith("whsec_") and len(value) - 6 >= MIN_SECRET_LENGTH:
            new.add(value[6:])
        with self._lock:
            known = self._known
            if new <= known.secrets:
                return
            secrets = known.secrets | new
            # Longest first, so a secret containing another is masked whole.
            pattern = re.compile("|".join(map(re.escape, sorted(secrets, key=len, reverse=True))))
            self._known = known._replace(secrets=secrets, secrets_re=pattern)

    def add_names(self, names: Iterable[str]) -> None:
        """Treat headers and fields called *names* as secret from now on."""
        new = {_normalise(n) for n in names if n}
        with self._lock:
            known = self._known
            if new <= known.names:
                return
            names_ = known.names | new
            alternatives = "|".join(re.escape(n).replace("\\-", "[-_]") for n in sorted(names_, key=len, reverse=True))
            pattern = re.compile(rf"\b({alternatives}):[ \t]*[^\r\n\"'\\]+", re.IGNORECASE)
            self._known = known._replace(names=names_, names_re=pattern)

    def add_headers(self, headers: Optional[Mapping[str, Any]]) -> None:
        """Mask the values of the secret headers among *headers* (and the credential of ``Scheme credential``)."""
        for name, value in (headers or {}).items():
            if isinstance(value, (str, bytes)) and self.is_secret_key(name):
                text = value.decode("latin-1") if isinstance(value, bytes) else value
                for secret in _credentials(text):
                    self.add_secret(secret)

    # -- masking --------------------------------------------------------------------------------

    def is_secret_key(self, key: object) -> bool:
        """True if a header, field or parameter called *key* holds a credential."""
        return _is_secret_key(key, self._known)

    def text(self, text: str) -> str:
        """*text* with the secrets it knows and every credential pattern masked."""
        return _text(text, self._known)

    def redact(self, value: Any) -> Any:
        """A copy of *value* with secrets masked (see :func:`redact`)."""
        return _redact(value, self._known, set())

    def headers(self, headers: Mapping[str, Any]) -> Dict[str, str]:
        """*headers* as a dict fit for printing: secret headers masked, the rest redacted."""
        known = self._known
        return {k: MASK if _is_secret_key(k, known) else _text(str(v), known) for k, v in headers.items()}

    def output(self, text: str) -> str:
        """:meth:`text`, and every URL shortened as :func:`safe_url` does (text read by people)."""
        return _output(text, self._known)

    def __repr__(self) -> str:
        known = self._known
        return f"<Redactor: {len(known.secrets)} secret value(s), {len(known.names)} secret name(s)>"


# -- the rule alone ---------------------------------------------------------------------------


def is_secret_key(key: object) -> bool:
    """True if a header, field or parameter called *key* holds a credential (``X-Custom-Auth``...)."""
    return _is_secret_key(key, _NOTHING)


def redact_text(text: str) -> str:
    """Return *text* with credential patterns masked."""
    return _text(text, _NOTHING)


def redact(value: Any) -> Any:
    """Return a copy of *value* with secrets masked.

    Mappings whose keys look secret get ``"***"`` values; strings (keys too) are
    masked by :func:`redact_text`; lists and tuples are recursed; other objects are
    returned unchanged (their ``repr`` is masked when a formatter renders it).
    """
    return _redact(value, _NOTHING, set())


def redact_headers(headers: Mapping[str, str]) -> Dict[str, str]:
    """Return *headers* as a dict fit for printing: secret headers masked, the rest redacted."""
    return {k: MASK if is_secret_key(k) else redact_text(str(v)) for k, v in headers.items()}


def redact_output(text: str) -> str:
    """:func:`redact_text`, and every URL shortened as :func:`safe_url` does: for text read by people
    (the command line), where a query string's values are never worth the risk."""
    return _output(text, _NOTHING)


@functools.lru_cache(maxsize=1024)  # results and log lines ask for the same few URLs over and over
def safe_url(url: Optional[str]) -> Optional[str]:
    """Return *url* fit for printing: no userinfo, query (``?***``) or fragment; secret segments masked.

    A path alone (``/hooks/x?token=y``) is treated the same way. The host is printed as
    :func:`~syncworkers.http.hosts.netloc` does (an IPv6 literal keeps its brackets).
    """
    if not url:
        return url
    try:
        parts = urlsplit(url)
        host = netloc(parts)
    except ValueError:
        return "<invalid url>"
    query = MASK if parts.query else ""
    path = _mask_path(parts.path, parts.hostname or "")
    if not host and parts.scheme and url[len(parts.scheme):].startswith("://"):
        # No authority (sqlite:////abs/path): urlunsplit would drop the "//" and print sqlite://abs/path.
        return f"{parts.scheme}://{path}" + (f"?{query}" if query else "")
    return urlunsplit((parts.scheme, host, path, query, ""))


__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "SECRET_NAME_PARTS",
    "SECRET_SEGMENT_MIN_LENGTH",
    "Redactor",
    "is_secret_key",
    "is_token_segment",
    "redact",
    "redact_text",
    "redact_headers",
    "redact_output",
    "safe_url",
]
