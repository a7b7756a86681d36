"""The ``SYNCWORKERS`` setting, read in one place, and where the outbox lives."""

from __future__ import annotations

from typing import Any, Dict, Optional
from urllib.parse import quote, urlencode

from django.conf import settings as django_settings  # type: ignore[import-untyped]
from django.db import connections  # type: ignore[import-untyped]

from ...exceptions import ConfigError
from ..settings import KEYS, Settings

#: Keys of a PostgreSQL database's OPTIONS that Django reads itself (not connection parameters).
_DJANGO_ONLY_OPTIONS = frozenset({"isolation_level", "pool", "server_side_binding", "assume_role", "cursor_factory"})

#: The setting's defaults (``SYNCWORKERS = {...}`` overrides any of them).
DEFAULTS: Dict[str, Any] = {"WORKERS": (), "MAX_WORKERS": None, "OUTBOX": None, "COORDINATION": None,
                            "BASE_URL": None, "SIGNING_SECRET": None}


def raw_setting() -> Dict[str, Any]:
    """``settings.SYNCWORKERS`` over the defaults; unknown keys are an error."""
    given = getattr(django_settings, "SYNCWORKERS", None) or {}
    if not isinstance(given, dict):
        raise ConfigError(f"SYNCWORKERS must be a dict, got {type(given).__name__}")
    unknown = sorted(set(given) - set(KEYS))
    if unknown:
        raise ConfigError(f"SYNCWORKERS has unknown keys {unknown} (known: {', '.join(KEYS)})")
    return {**DEFAULTS, **given}


def outbox_alias() -> Optional[str]:
    """The DATABASES alias OUTBOX names, or None when OUTBOX is a path or URL (or unset)."""
    outbox = raw_setting()["OUTBOX"]
    return outbox if isinstance(outbox, str) and outbox in django_settings.DATABASES else None


def get_settings() -> Settings:
    """The SYNCWORKERS setting as :class:`Settings`; an OUTBOX naming a database becomes its location."""
    values = raw_setting()
    alias = outbox_alias()
    if alias is not None:
        values["OUTBOX"] = database_location(alias)
    return Settings.from_mapping(values)


def database_location(alias: str) -> str:
    """The outbox location (SQLite file or PostgreSQL URL) of the database *alias* (the test database in tests),
    where the deliverer connects."""
    db = connections[alias].settings_dict
    engine = db["ENGINE"]
    if engine.endswith("sqlite3"):
        # In memory (Django's test database) this names it for display only: the outbox then runs on
        # Django's own connections (see outbox.DjangoOutbox).
        return str(db["NAME"])
    if "postgresql" in engine:
        user = quote(str(db.get("USER") or ""), safe="")
        password = quote(str(db.get("PASSWORD") or ""), safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = db.get("HOST") or "localhost"
        port = f":{db['PORT']}" if db.get("PORT") else ""
        # libpq's own OPTIONS (options=-c search_path=..., sslmode, ...) go along; Django's do not.
        params = {k: str(v) for k, v in (db.get("OPTIONS") or {}).items()
                  if k not in _DJANGO_ONLY_OPTIONS and isinstance(v, (str, int))}
        query = f"?{urlencode(params, quote_via=quote)}" if params else ""
        return f"postgresql://{auth}{host}{port}/{quote(str(db['NAME']), safe='')}{query}"
    raise ConfigError(f"SYNCWORKERS OUTBOX {alias!r}: the outbox lives in SQLite or PostgreSQL, not {engine}")


__all__ = ["DEFAULTS", "database_location", "get_settings", "outbox_alias", "raw_setting"]
