"""The migrations' work: the outbox's tables made, brought up to date and removed with the store's own SQL.

The statements are the stores' (``schema_statements`` / ``drop_statements`` of the
SQLite and PostgreSQL stores), so a store opens the tables these made, whichever
comes first, and ``migrate syncworkers zero`` leaves no table behind. Only the
database that ``SYNCWORKERS["OUTBOX"]`` names gets them.
"""

from __future__ import annotations

from typing import Any, List, Optional

from django.db import transaction  # type: ignore[import-untyped]


def _outbox_connection(schema_editor: Any) -> Optional[Any]:
    """The migrated database's connection when it holds the outbox, else None."""
    from .conf import outbox_alias

    connection = schema_editor.connection
    return connection if connection.alias == outbox_alias() else None


def _sqlite_version(connection: Any) -> int:
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA user_version")
        return int(cursor.fetchone()[0])


def create_outbox(apps: Any, schema_editor: Any) -> None:
    """Create the outbox tables, or bring them up to the store's schema (an older file's are renamed)."""
    connection = _outbox_connection(schema_editor)
    if connection is None:
        return
    statements: List[str]
    if connection.vendor == "sqlite":
        from ...outbox.sqlite import schema_statements

        with connection.cursor() as cursor:
            # The store's journal mode, set here outside any transaction (the reason the migrations
            # are not atomic): a store opened later inside a view's atomic() then needs no write lock.
            cursor.execute("PRAGMA journal_mode=WAL")
        statements = schema_statements(_sqlite_version(connection))
    elif connection.vendor == "postgresql":
        from ...outbox.postgres import schema_statements as postgres_statements

        statements = postgres_statements()
    else:
        return  # conf.database_location() refuses other databases as an outbox
    with transaction.atomic(using=connection.alias):
        for statement in statements:
            schema_editor.execute(statement, params=None)


def drop_outbox(apps: Any, schema_editor: Any) -> None:
    """Remove the outbox tables (all three, whatever the schema version) and the SQLite schema version."""
    connection = _outbox_connection(schema_editor)
    if connection is None:
        return
    if connection.vendor == "sqlite":
        from ...outbox.sqlite import drop_statements

        statements = drop_statements(_sqlite_version(connection))
    elif connection.vendor == "postgresql":
        from ...outbox.postgres import drop_statements as postgres_drops

        statements = postgres_drops()
    else:
        return
    for statement in statements:
        schema_editor.execute(statement, params=None)


__all__ = ["create_outbox", "drop_outbox"]
