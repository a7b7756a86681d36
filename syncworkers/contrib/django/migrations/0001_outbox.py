"""The outbox tables, in the database SYNCWORKERS["OUTBOX"] names, exactly as the outbox stores create them.

The statements are the stores' own (``schema_statements()`` of the SQLite and
PostgreSQL stores), so a store opens the tables this made, and this is safe
whichever comes first: every statement runs only for what is missing.
"""

from typing import Any, List, Tuple

from django.db import migrations, transaction  # type: ignore[import-untyped]


def create_outbox(apps: Any, schema_editor: Any) -> None:
    from syncworkers.contrib.django.conf import outbox_alias

    connection = schema_editor.connection
    if connection.alias != outbox_alias():
        return
    if connection.vendor == "sqlite":
        from syncworkers.outbox.sqlite import schema_statements

        with connection.cursor() as cursor:
            # The store's journal mode, set here outside any transaction (the reason this migration
            # is not atomic): a store opened later inside a view's atomic() then needs no write lock.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA user_version")
            version = cursor.fetchone()[0]
        statements = schema_statements(version)
    elif connection.vendor == "postgresql":
        from syncworkers.outbox.postgres import schema_statements as postgres_statements

        statements = postgres_statements()
    else:
        return  # conf.database_location() refuses other databases as an outbox
    with transaction.atomic(using=connection.alias):
        for statement in statements:
            schema_editor.execute(statement, params=None)


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
    atomic = False
    dependencies: List[Tuple[str, str]] = []
    operations = [migrations.RunPython(create_outbox, drop_outbox)]
