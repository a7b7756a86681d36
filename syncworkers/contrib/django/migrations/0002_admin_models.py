"""The admin's models over the outbox tables (unmanaged: the store owns them), and the tables brought up to
the store's schema: an outbox made before its SQLite tables carried the ``syncworkers_outbox`` prefix is
renamed. Reversed, nothing changes here (0001 drops the tables)."""

from typing import List, Tuple

from django.db import migrations, models  # type: ignore[import-untyped]

from syncworkers.contrib.django.schema import create_outbox


class Migration(migrations.Migration):  # type: ignore[misc]
    atomic = False
    dependencies: List[Tuple[str, str]] = [("syncworkers", "0001_outbox")]
    operations = [
        migrations.RunPython(create_outbox, migrations.RunPython.noop),
        migrations.CreateModel(
            name="Delivery",
            fields=[
                ("id", models.TextField(primary_key=True, serialize=False)),
                ("endpoint", models.TextField()),
                ("url", models.TextField()),
                ("body", models.BinaryField()),
                ("headers", models.TextField()),
                ("state", models.TextField(choices=[
                    ("pending", "pending"), ("in_flight", "in flight"), ("held", "held (endpoint disabled)"),
                    ("delivered", "delivered"), ("dead", "dead")])),
                ("attempts", models.IntegerField()),
                ("next_attempt_at", models.FloatField()),
                ("created_at", models.FloatField()),
                ("updated_at", models.FloatField()),
                ("last_status", models.IntegerField(null=True)),
                ("last_error", models.TextField(null=True)),
                ("owner", models.TextField(null=True)),
                ("lease_until", models.FloatField(null=True)),
                ("delivered_at", models.FloatField(null=True)),
                ("target", models.TextField(null=True)),
            ],
            options={"verbose_name": "delivery", "verbose_name_plural": "deliveries",
                     "db_table": "syncworkers_outbox", "ordering": ["-updated_at"], "managed": False},
        ),
        migrations.CreateModel(
            name="Endpoint",
            fields=[
                ("target", models.TextField(primary_key=True, serialize=False)),
                ("disabled_at", models.FloatField(null=True)),
                ("reason", models.TextField(null=True)),
                ("failing_since", models.FloatField(null=True)),
                ("last_failure_at", models.FloatField(null=True)),
                ("last_status", models.IntegerField(null=True)),
            ],
            options={"db_table": "syncworkers_outbox_endpoints", "ordering": ["target"], "managed": False},
        ),
    ]
