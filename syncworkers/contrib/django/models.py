"""The outbox's tables as Django models, for the admin: unmanaged, the outbox store owns them.

The tables are the store's (``manage.py migrate`` runs the store's own statements, see
:mod:`.schema`); these models only read them. Changes go through the store's operations
(``replay``, ``enable_endpoint``), never through ``save()``, so the store's rules hold.
The attempt log has a two-column key, which Django models cannot carry: the admin reads
it through the store (``attempts(id)``).
"""

from django.db import models  # type: ignore[import-untyped]

from ...outbox.store import DEAD, DELIVERED, HELD, IN_FLIGHT, PENDING, table_names

_TABLES = table_names()

STATE_CHOICES = [(PENDING, "pending"), (IN_FLIGHT, "in flight"), (HELD, "held (endpoint disabled)"),
                 (DELIVERED, "delivered"), (DEAD, "dead")]


class Delivery(models.Model):  # type: ignore[misc]
    """A webhook delivery; times are epoch seconds, as the store keeps them."""

    id = models.TextField(primary_key=True)
    endpoint = models.TextField()
    url = models.TextField()
    body = models.BinaryField()
    headers = models.TextField()
    state = models.TextField(choices=STATE_CHOICES)
    attempts = models.IntegerField()
    next_attempt_at = models.FloatField()
    created_at = models.FloatField()
    updated_at = models.FloatField()
    last_status = models.IntegerField(null=True)
    last_error = models.TextField(null=True)
    owner = models.TextField(null=True)
    lease_until = models.FloatField(null=True)
    delivered_at = models.FloatField(null=True)
    target = models.TextField(null=True)
    trace_context = models.TextField(null=True)  #: JSON: the traceparent/tracestate enqueue() kept

    class Meta:
        managed = False
        db_table = _TABLES["t"]
        ordering = ["-updated_at"]
        verbose_name = "delivery"
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return str(self.id)


class Endpoint(models.Model):  # type: ignore[misc]
    """An endpoint's health (host[:port]/path); times are epoch seconds."""

    target = models.TextField(primary_key=True)
    disabled_at = models.FloatField(null=True)
    reason = models.TextField(null=True)
    failing_since = models.FloatField(null=True)
    last_failure_at = models.FloatField(null=True)
    last_status = models.IntegerField(null=True)

    class Meta:
        managed = False
        db_table = _TABLES["e"]
        ordering = ["target"]

    def __str__(self) -> str:
        from ...outbox.health import shown

        return shown(str(self.target))
