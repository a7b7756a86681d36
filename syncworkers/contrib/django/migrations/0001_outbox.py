"""The outbox tables, in the database SYNCWORKERS["OUTBOX"] names, exactly as the outbox stores create them
(see ``syncworkers.contrib.django.schema``); reversed, all of them are dropped."""

from typing import List, Tuple

from django.db import migrations  # type: ignore[import-untyped]

from syncworkers.contrib.django.schema import create_outbox, drop_outbox


class Migration(migrations.Migration):  # type: ignore[misc]
    initial = True
    atomic = False
    dependencies: List[Tuple[str, str]] = []
    operations = [migrations.RunPython(create_outbox, drop_outbox)]
