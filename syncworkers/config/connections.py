"""Connection strings: the one parser of the SQLite, PostgreSQL and Redis locations syncworkers opens.

The outbox (``WebhookConfig.outbox_url``, ``syncworkers outbox --url``), the poller state
store (``POLLER_STATE_URL``), tick claims (``SYNCWORKERS_COORDINATION_URL``) and the Redis
source (``REDIS_URL``) all read their location here:

* ``sqlite:///relative/path``, ``sqlite:////absolute/path`` (as SQLAlchemy writes them;
  ``%xx`` escapes decoded) or, where files are taken, a plain file path;
* ``postgresql://``, ``postgres://`` or ``postgresql+psycopg://`` (SQLAlchemy's spelling):
  a PostgreSQL database, handed to psycopg as ``postgresql://``;
* ``redis://``, ``rediss://`` (TLS) or ``unix://`` (a socket file).

A :class:`ConnectionURL` prints without its password (a database URL as
:func:`~syncworkers.observability.redaction.safe_url` shows it; a SQLite URL or path as
given: its folder names are not secrets). Error messages never quote a password. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple
from urllib.parse import unquote, urlsplit

from ..observability.redaction import Redactor, safe_url

#: The kinds of location, as :attr:`ConnectionURL.kind` names them.
SQLITE, POSTGRESQL, REDIS = "sqlite", "postgresql", "redis"
#: Each scheme accepted, and the kind it names.
SCHEMES = {
    "sqlite": SQLITE,
    "postgresql": POSTGRESQL,
    "postgres": POSTGRESQL,
    "postgresql+psycopg": POSTGRESQL,
    "redis": REDIS,
    "rediss": REDIS,
    "unix": REDIS,  # redis-py's unix:///path/to/redis.sock
}
#: How each kind may be written, for error messages (no host:port placeholder: printed
#: text has its URLs parsed and shortened, and a placeholder port would not parse).
FORMS = {
    SQLITE: "sqlite:///relative/path, sqlite:////absolute/path",
    POSTGRESQL: "a postgresql:// URL (or postgres://, postgresql+psycopg://)",
    REDIS: "a redis:// URL (or rediss://, unix://)",
}


@dataclass(frozen=True)
class ConnectionURL:
    """A parsed location; ``str()`` is :attr:`shown`, never the password."""

    text: str  #: as given (stripped): what psycopg or redis-py is handed, with :attr:`dsn`'s scheme
    kind: str  #: :data:`SQLITE`, :data:`POSTGRESQL` or :data:`REDIS`
    scheme: str  #: as given, lowercase ("" for a plain file path)
    path: Optional[str] = None  #: the SQLite file (``%xx`` decoded)

    @property
    def dsn(self) -> str:
        """What the database client takes: a PostgreSQL URL with the ``postgresql://`` scheme, else :attr:`text`."""
        if self.kind == POSTGRESQL and self.scheme != "postgresql":
            return "postgresql" + self.text[len(self.scheme):]
        return self.text

    @property
    def password(self) -> Optional[str]:
        """The URL's password (decoded), None when it has none."""
        raw = self._raw_password()
        return unquote(raw) if raw else None

    def _raw_password(self) -> Optional[str]:
        if self.kind == SQLITE:
            return None
        try:
            return urlsplit(self.text).password or None
        except ValueError:
            return None

    @property
    def shown(self) -> str:
        """The location fit to print: a database URL without password or query string; SQLite as given."""
        if self.kind == SQLITE:
            return self.text
        return safe_url(self.text) or ""

    def redactor(self) -> Redactor:
        """A :class:`~syncworkers.observability.redaction.Redactor` that masks this URL's password
        (for the text of a driver's errors, which may quote it)."""
        return Redactor([self.password, self._raw_password()])

    def __str__(self) -> str:
        return self.shown

    def __repr__(self) -> str:
        return f"ConnectionURL({self.shown!r})"


def scheme_of(text: str) -> str:
    """The scheme of *text* (lowercase; ``""`` for a plain path)."""
    return text.split("://", 1)[0].strip().lower() if "://" in text else ""


def parse_connection_url(value: Any, accept: Tuple[str, ...] = (SQLITE, POSTGRESQL, REDIS), *,
                         paths: bool = True) -> ConnectionURL:
    """*value* parsed as a location of one of the kinds in *accept*; ValueError saying why not.

    With *paths* (and SQLite accepted), a value without ``://`` is a SQLite file path.
    """
    forms = ", ".join(FORMS[kind] for kind in accept) + (", or a file path" if paths and SQLITE in accept else "")
    if not isinstance(value, str):
        raise ValueError(f"must be {forms}; got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ValueError(f"must be {forms}; got an empty string")
    scheme = scheme_of(text)
    if not scheme:
        if text.split(":", 1)[0].lower() in SCHEMES and ":" in text:  # not quoted: it may hold a password
            raise ValueError(f"must be {forms}; got a location without '//' after its scheme")
        if not (paths and SQLITE in accept):
            raise ValueError(f"must be {forms}; got no scheme")
        return ConnectionURL(text, SQLITE, "", text)
    kind = SCHEMES.get(scheme)
    if kind is None or kind not in accept:
        raise ValueError(f"unsupported scheme {scheme!r}; must be {forms}")
    if kind != SQLITE:
        return ConnectionURL(text, kind, scheme)
    parts = urlsplit(text)
    # sqlite:///relative/path or sqlite:////absolute/path: no host, a path, nothing after it
    if parts.netloc or not parts.path.strip("/"):
        raise ValueError(f"must be {forms}; got a sqlite URL with a host or no path")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError(f"must be {forms}; got a sqlite URL with a query string or fragment")
    return ConnectionURL(text, SQLITE, scheme, unquote(parts.path[1:]))


__all__ = ["FORMS", "POSTGRESQL", "REDIS", "SCHEMES", "SQLITE", "ConnectionURL", "parse_connection_url", "scheme_of"]
