"""The deliveries' trace context (the W3C ``traceparent``/``tracestate`` that ``enqueue()`` keeps): the column
added with the store's own statements (SQLite schema 4, PostgreSQL's added column), and the admin's model in
step. Reversed, nothing changes here (0001 drops the tables)."""

from typing import List, Tuple

from django.db import migrations, models  # type: ignore[import-untyped]

from syncworkers.contrib.django.schema import create_outbox


class Migration(migrations.Migration):  # type: ignore[misc]
    atomic = False
    dependencies: List[Tuple[str, str]] = [("syncworkers", "0002_admin_models")]
    operations = [
        migrations.RunPython(create_outbox, migrations.RunPython.noop),
        migrations.AddField(model_name="delivery", name="trace_context", field=models.TextField(null=True)),
    ]
