"""The outbox tables, in the database SYNCWORKERS["OUTBOX"] names, exactly as the outbox stores create them.

The stores create their tables on first use when missing, so this is safe
whichever comes first: statements run only when the store's table is absent.
"""

from typing import Any, List, Tuple

from django.db import migrations  # type: ignore[import-untyped]


def create_outbox(apps: Any, schema_editor: Any) -> None:
    from syncworkers.contrib.django.conf import outbox_alias

    connection = schema_editor.connection
    if connection.alias != outbox_alias():
        return
    if connection.vendor == "sqlite":
        from syncworkers.outbox.sqlite import _MIGRATIONS, SCHEMA_VERSION

        with connection.cursor() as cursor:
            cursor.execute("PRAGMA user_version")
            version = cursor.fetchone()[0]
            for script in _MIGRATIONS[version:]:
                for statement in filter(str.strip, script.split(";")):
                    cursor.execute(statement)
            cursor.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    elif connection.vendor == "postgresql":
        from psycopg import sql

        from syncworkers.outbox.postgres import _DDL, DEFAULT_TABLE

        names = {k: sql.Identifier(f"{DEFAULT_TABLE}_{k}") for k in ("due", "lease", "updated")}
        raw = connection.connection
        for statement in _DDL:
            text = sql.SQL(statement).format(t=sql.Identifier(DEFAULT_TABLE), **names).as_string(raw)
            schema_editor.execute(text, params=None)


def drop_outbox(apps: Any, schema_editor: Any) -> None:
    from syncworkers.contrib.django.conf import outbox_alias

    connection = schema_editor.connection
    if connection.alias != outbox_alias():
        return
    if connection.vendor == "sqlite":
        schema_editor.execute("DROP TABLE IF EXISTS deliveries")
        schema_editor.execute("PRAGMA user_version=0")
    elif connection.vendor == "postgresql":
        from syncworkers.outbox.postgres import DEFAULT_TABLE

        schema_editor.execute(f'DROP TABLE IF EXISTS "{DEFAULT_TABLE}"')


class Migration(migrations.Migration):  # type: ignore[misc]
    initial = True
    dependencies: List[Tuple[str, str]] = []
    operations = [migrations.RunPython(create_outbox, drop_outbox)]
