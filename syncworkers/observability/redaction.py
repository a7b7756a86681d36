"""What counts as a secret and how it is masked: one rule, one mask (``***``).

- A header, field or parameter is secret when its name contains ``auth``, ``token``,
  ``key``, ``secret``, ``signature``, ``password`` (or ``passwd``) or ``cookie``, or
  when it was registered with :func:`register_secret_names`
  (``HTTPClientConfig(secret_headers=...)`` does that).
- A value registered with :func:`register_secret` is masked wherever it appears.
- Credentials are also recognised by their shape: ``Bearer x``, ``Basic x``,
  ``whsec_x``, ``name=value`` and ``'name': 'value'`` with a secret name, URL userinfo.
- A URL path segment that is itself a secret (Slack or Discord webhook URLs: at least
  20 characters of ``[A-Za-z0-9_-]`` mixing letters and digits) is masked.

:func:`safe_url` is how every URL is printed: no userinfo, query or fragment, secret
segments masked. Everything here is pure and precompiled; the registries are
process-wide and only grow.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Mapping
from typing import Any, Dict, FrozenSet, Iterable, Optional, Pattern, Set, Union
from urllib.parse import urlsplit, urlunsplit

#: What replaces a secret.
MASK = "***"
#: Registered secrets shorter than this are ignored: masking them would garble ordinary text.
MIN_SECRET_LENGTH = 4
#: A URL path segment at least this long, of letters, digits, ``_`` and ``-`` mixing letters
#: and digits, is taken for a secret (the token of a Slack or Discord webhook URL).
SECRET_SEGMENT_MIN_LENGTH = 20
#: Parts of a name that make it secret (compared lower-case).
SECRET_NAME_PARTS = ("auth", "token", "key", "secret", "signature", "password", "passwd", "cookie")

_SECRET_NAME_RE = re.compile("|".join(SECRET_NAME_PARTS))
_SECRET_SEGMENT_RE = re.compile(
    rf"(?=[\w-]*[A-Za-z])(?=[\w-]*[0-9])[A-Za-z0-9_-]{{{SECRET_SEGMENT_MIN_LENGTH},}}", re.ASCII)

_secrets: FrozenSet[str] = frozenset()
_secrets_re: Optional[Pattern[str]] = None
_names: FrozenSet[str] = frozenset()  # registered secret names, normalised
_names_header_re: Optional[Pattern[str]] = None
_lock = threading.Lock()

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
_PATH_SEGMENT_RE = re.compile(r"(?:^|(?<=/))[^/?#]+")
#: What may follow a URL in a sentence without being part of it.
_TRAILING_PUNCTUATION = ".,:;!?)]}"


def _normalise(name: object) -> str:
    return str(name).lower().replace("_", "-")


def is_secret_key(key: object) -> bool:
    """True if a header, field or parameter called *key* holds a credential (``X-Custom-Auth``...)."""
    name = _normalise(key)
    return _SECRET_NAME_RE.search(name) is not None or name in _names


def register_secret_names(names: Iterable[str]) -> None:
    """Treat headers and fields called *names* as secret from now on (process-wide)."""
    global _names, _names_header_re
    new = {_normalise(n) for n in names if n}
    with _lock:
        if new <= _names:
            return
        _names = _names | new
        alternatives = "|".join(re.escape(n).replace("\\-", "[-_]") for n in sorted(_names, key=len, reverse=True))
        _names_header_re = re.compile(rf"\b({alternatives}):[ \t]*[^\r\n\"'\\]+", re.IGNORECASE)


def register_secret(value: Union[str, bytes, None]) -> None:
    """Mask *value* wherever it appears in log output from now on (process-wide).

    ``None``, empty and very short values are ignored. A ``whsec_`` secret is also
    registered without its prefix, the form the signing code decodes.
    """
    global _secrets, _secrets_re
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
    with _lock:
        if new <= _secrets:
            return
        _secrets = _secrets | new
        # Longest first, so a secret containing another is masked whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _secrets_re = re.compile("|".join(map(re.escape, ordered)))


def _mask_auth(match: "re.Match[str]") -> str:
    token = match.group(3)
    # "Basic authentication", "bearer token": an all-lowercase short word is prose, not a credential.
    if token.isalpha() and token.islower() and len(token) < 20:
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{MASK}"


def _mask_key_value(match: "re.Match[str]") -> str:
    return f"{match.group(1)}={MASK}" if is_secret_key(match.group(1)) else match.group(0)


def _mask_header(match: "re.Match[str]") -> str:
    name = match.group(1)
    header_like = "-" in name or "_" in name or name.lower() in _BARE_HEADERS
    if (header_like and is_secret_key(name)) or _normalise(name) in _names:
        return f"{name}: {MASK}"
    return match.group(0)


def _mask_quoted_item(match: "re.Match[str]") -> str:
    if not is_secret_key(match.group(2)):
        return match.group(0)
    quote, key, sep, value_quote = match.group(1, 2, 3, 4)
    return f"{quote}{key}{quote}{sep}{value_quote}{MASK}{value_quote}"


def _mask_segment(match: "re.Match[str]") -> str:
    return MASK if _SECRET_SEGMENT_RE.fullmatch(match.group(0)) else match.group(0)


def _mask_path(path: str) -> str:
    """*path* with its secret segments (webhook tokens) masked."""
    return _PATH_SEGMENT_RE.sub(_mask_segment, path) if len(path) > SECRET_SEGMENT_MIN_LENGTH else path


def _mask_url_path(match: "re.Match[str]") -> str:
    url = match.group(0)
    start = url.find("/", url.find("://") + 3)
    if start < 0:
        return url
    end = len(url)
    for sep in "?#":
        found = url.find(sep, start)
        if found >= 0:
            end = min(end, found)
    return url[:start] + _mask_path(url[start:end]) + url[end:]


def redact_text(text: str) -> str:
    """Return *text* with registered secrets and credential patterns masked."""
    pattern = _secrets_re
    if pattern is not None:
        text = pattern.sub(MASK, text)
    # Substring tests are far cheaper than a regex pass, and most strings are plain.
    lowered = text.lower()
    if "bearer" in lowered or "basic" in lowered:
        text = _AUTH_RE.sub(_mask_auth, text)
    if "whsec_" in text:
        text = _WHSEC_RE.sub("whsec_" + MASK, text)
    if "=" in text:
        text = _KEY_VALUE_RE.sub(_mask_key_value, text)
    if ":" in text:
        text = _HEADER_RE.sub(_mask_header, text)
        names_re = _names_header_re
        if names_re is not None:
            text = names_re.sub(_mask_header, text)
        if "'" in text or '"' in text:
            text = _QUOTED_ITEM_RE.sub(_mask_quoted_item, text)
    if "://" in text:
        text = _USERINFO_RE.sub(MASK + "@", text)
        text = _URL_RE.sub(_mask_url_path, text)
    return text


def redact(value: Any) -> Any:
    """Return a copy of *value* with secrets masked.

    Mappings whose keys look secret get ``"***"`` values; strings (keys too) are
    masked by :func:`redact_text`; lists and tuples are recursed; other objects are
    returned unchanged (their ``repr`` is masked when a formatter renders it).
    """
    return _redact(value, set())


def _redact(value: Any, active: Set[int]) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if not isinstance(value, (dict, list, tuple, Mapping)):
        return value
    if id(value) in active:
        return "<recursion>"  # a self-referencing structure
    active.add(id(value))
    try:
        if isinstance(value, (dict, Mapping)):
            return {_redact(k, active): MASK if is_secret_key(k) else _redact(v, active)
                    for k, v in value.items()}
        items = [_redact(v, active) for v in value]
        return items if isinstance(value, list) else tuple(items)
    finally:
        active.discard(id(value))


def redact_headers(headers: Mapping[str, str]) -> Dict[str, str]:
    """Return *headers* as a dict fit for printing: secret headers masked, the rest redacted."""
    return {k: MASK if is_secret_key(k) else redact_text(str(v)) for k, v in headers.items()}


def redact_output(text: str) -> str:
    """:func:`redact_text`, and every URL shortened as :func:`safe_url` does: for text read by people
    (the command line), where a query string's values are never worth the risk."""
    text = redact_text(text)
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


@functools.lru_cache(maxsize=1024)  # results and log lines ask for the same few URLs over and over
def safe_url(url: Optional[str]) -> Optional[str]:
    """Return *url* fit for printing: no userinfo, query (``?***``) or fragment; secret segments masked.

    A path alone (``/hooks/x?token=y``) is treated the same way.
    """
    if not url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<invalid url>"
    query = MASK if parts.query else ""
    if not host and parts.scheme and url[len(parts.scheme):].startswith("://"):
        # No authority (sqlite:////abs/path): urlunsplit would drop the "//" and print sqlite://abs/path.
        return f"{parts.scheme}://{_mask_path(parts.path)}" + (f"?{query}" if query else "")
    return urlunsplit((parts.scheme, host, _mask_path(parts.path), query, ""))


__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "SECRET_NAME_PARTS",
    "SECRET_SEGMENT_MIN_LENGTH",
    "is_secret_key",
    "register_secret",
    "register_secret_names",
    "redact",
    "redact_text",
    "redact_headers",
    "redact_output",
    "safe_url",
]
