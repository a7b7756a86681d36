"""The outbox in Django's admin: deliveries (filter, search, attempt log, replay) and endpoints (enable).

Read-only pages over the store's tables (:mod:`.models`); the two actions go through the
store's own operations (``replay``, ``enable_endpoint``) on the app's outbox, so a
replayed delivery to a disabled endpoint is held, an enabled endpoint releases what it
held, and the running sender hears of it. What a page shows is masked as every line the
toolkit prints is: URLs without credentials or query strings, secret headers and payload
fields as ``***``. Registered when ``SYNCWORKERS["OUTBOX"]`` names a database.
"""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any, Callable, Optional, TypeVar, cast

from django.contrib import admin, messages  # type: ignore[import-untyped]
from django.db.models import Count, OuterRef, Subquery  # type: ignore[import-untyped]
from django.db.models.functions import Coalesce  # type: ignore[import-untyped]
from django.utils import formats, timezone  # type: ignore[import-untyped]
from django.utils.html import format_html, format_html_join  # type: ignore[import-untyped]

from ...exceptions import ConfigError
from ...observability.redaction import redact, redact_headers, redact_text, safe_url
from ...outbox.health import shown
from ...outbox.store import DEAD, HELD, trace_of
from .models import Delivery, Endpoint


F = TypeVar("F", bound=Callable[..., Any])


def _display(**options: Any) -> Callable[[F], F]:
    """``admin.display``, typed."""
    return cast(Callable[[F], F], admin.display(**options))


def _action(**options: Any) -> Callable[[F], F]:
    """``admin.action``, typed."""
    return cast(Callable[[F], F], admin.action(**options))


def _when(seconds: float) -> str:
    """An epoch time as Django shows a datetime: in the current time zone, in the active locale's format."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return str(formats.localize(timezone.template_localtime(moment)))


def _outbox() -> Any:
    from . import sender

    return sender().outbox


def _alias() -> Optional[str]:
    from .conf import outbox_alias

    return outbox_alias()


class _OutboxAdmin(admin.ModelAdmin):  # type: ignore[misc]
    """Read-only pages on the outbox's database; what changes goes through the store's actions."""

    def get_queryset(self, request: Any) -> Any:
        return super().get_queryset(request).using(_alias())

    def _time(self, seconds: Optional[float]) -> str:
        return str(self.get_empty_value_display()) if seconds is None else _when(seconds)

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        # The change permission allows the actions; a delivery's own page is read-only.
        return obj is None and bool(super().has_change_permission(request))


class DeliveryAdmin(_OutboxAdmin):
    list_display = ("id", "endpoint", "state", "attempts", "last_status", "created", "updated", "next_attempt")
    list_filter = ("state", "endpoint")
    search_fields = ("^id",)
    search_help_text = "A delivery id (its webhook-id), or its beginning."
    actions = ["replay"]
    fieldsets = (
        (None, {"fields": ("id", "endpoint", "shown_url", "state", "attempts", "last_status", "shown_error")}),
        ("Schedule", {"fields": ("created", "updated", "next_attempt", "delivered", "owner", "lease")}),
        ("What is sent", {"fields": ("payload", "shown_headers", "trace")}),
        ("Attempt log", {"fields": ("attempt_log",)}),
    )
    readonly_fields = ("id", "endpoint", "shown_url", "state", "attempts", "last_status", "shown_error", "created",
                       "updated", "next_attempt", "delivered", "owner", "lease", "payload", "shown_headers",
                       "trace", "attempt_log")

    @_display(description="created", ordering="created_at")
    def created(self, obj: Delivery) -> str:
        return self._time(obj.created_at)

    @_display(description="updated", ordering="updated_at")
    def updated(self, obj: Delivery) -> str:
        return self._time(obj.updated_at)

    @_display(description="next attempt", ordering="next_attempt_at")
    def next_attempt(self, obj: Delivery) -> str:
        return self._time(obj.next_attempt_at if obj.state in ("pending", "held") else None)

    @_display(description="delivered")
    def delivered(self, obj: Delivery) -> str:
        return self._time(obj.delivered_at)

    @_display(description="lease until")
    def lease(self, obj: Delivery) -> str:
        return self._time(obj.lease_until)

    @_display(description="URL")
    def shown_url(self, obj: Delivery) -> str:
        return safe_url(obj.url) or ""

    @_display(description="last error")
    def shown_error(self, obj: Delivery) -> str:
        return redact_text(obj.last_error or "")

    @_display(description="payload")
    def payload(self, obj: Delivery) -> Any:
        body = bytes(obj.body)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return format_html("<pre>{}</pre><p>(not UTF-8: base64)</p>", base64.b64encode(body).decode("ascii"))
        try:
            text = json.dumps(redact(json.loads(text)), indent=2, ensure_ascii=False)
        except ValueError:
            text = redact_text(text)
        return format_html("<pre>{}</pre>", text)

    @_display(description="headers")
    def shown_headers(self, obj: Delivery) -> Any:
        headers = redact_headers(json.loads(obj.headers or "{}"))
        return format_html("<pre>{}</pre>", json.dumps(headers, indent=2, ensure_ascii=False))

    @_display(description="trace context")
    def trace(self, obj: Delivery) -> str:
        """The traceparent enqueue() kept: every attempt is a child of that span."""
        found = trace_of(obj.trace_context)
        return str(found.get("traceparent", "")) if found else str(self.get_empty_value_display())

    @_display(description="attempts, oldest first")
    def attempt_log(self, obj: Delivery) -> Any:
        attempts = _outbox().attempts(obj.id)
        if not attempts:
            return "no attempt yet"
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{} ms</td><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
            ((n, _when(a.at), round(a.duration * 1000), a.kind, a.status or "", redact_text(a.error or ""),
              redact_text(a.body.decode("utf-8", "replace")))
             for n, a in enumerate(attempts, start=1)))
        return format_html(
            '<table class="syncworkers-attempts"><thead><tr><th>#</th><th>at</th><th>took</th><th>outcome</th>'
            "<th>status</th><th>error</th><th>answer</th></tr></thead><tbody>{}</tbody></table>", rows)

    @_action(description="Replay the selected dead deliveries", permissions=["change"])
    def replay(self, request: Any, queryset: Any) -> None:
        ids = list(queryset.values_list("id", flat=True))
        dead = list(queryset.filter(state=DEAD).values_list("id", flat=True))
        replayed = _outbox().replay(ids=dead) if dead else 0
        note = f"; {len(ids) - replayed} not dead, left as they were" if len(ids) > replayed else ""
        self.message_user(request, f"{replayed} dead deliveries replayed: due now{note}.",
                          messages.SUCCESS if replayed else messages.WARNING)


class _EnabledFilter(admin.SimpleListFilter):  # type: ignore[misc]
    title = "state"
    parameter_name = "enabled"

    def lookups(self, request: Any, model_admin: Any) -> Any:
        return [("yes", "enabled"), ("no", "disabled")]

    def queryset(self, request: Any, queryset: Any) -> Any:
        if self.value() in ("yes", "no"):
            return queryset.filter(disabled_at__isnull=self.value() == "yes")
        return queryset


class EndpointAdmin(_OutboxAdmin):
    list_display = ("endpoint", "enabled", "held", "reason", "disabled", "failing", "last_status")
    list_filter = (_EnabledFilter,)
    actions = ["enable"]
    fields = ("endpoint", "enabled", "held", "reason", "disabled", "failing", "last_failure", "last_status")
    readonly_fields = fields

    def get_queryset(self, request: Any) -> Any:
        # How many deliveries each endpoint holds, in the same query.
        held = (Delivery.objects.using(_alias()).filter(target=OuterRef("target"), state=HELD)
                .order_by().values("target").annotate(n=Count("*")).values("n"))
        return super().get_queryset(request).annotate(held=Coalesce(Subquery(held), 0))

    @_display(description="held deliveries", ordering="held")
    def held(self, obj: Endpoint) -> int:
        return int(obj.held)

    @_display(description="endpoint", ordering="target")
    def endpoint(self, obj: Endpoint) -> str:
        return shown(str(obj.target))

    @_display(description="enabled", boolean=True)
    def enabled(self, obj: Endpoint) -> bool:
        return obj.disabled_at is None

    @_display(description="disabled", ordering="disabled_at")
    def disabled(self, obj: Endpoint) -> str:
        return self._time(obj.disabled_at)

    @_display(description="failing since")
    def failing(self, obj: Endpoint) -> str:
        return self._time(obj.failing_since)

    @_display(description="last failure")
    def last_failure(self, obj: Endpoint) -> str:
        return self._time(obj.last_failure_at)

    @_action(description="Enable the selected endpoints (release their held deliveries)",
                  permissions=["change"])
    def enable(self, request: Any, queryset: Any) -> None:
        outbox = _outbox()
        targets = list(queryset.filter(disabled_at__isnull=False).values_list("target", flat=True))
        released = sum(outbox.enable_endpoint(target) for target in targets)
        self.message_user(request, f"{len(targets)} endpoints enabled; {released} held deliveries released.",
                          messages.SUCCESS if targets else messages.WARNING)


def _outbox_in_a_database() -> bool:
    try:
        return _alias() is not None
    except ConfigError:  # a bad SYNCWORKERS setting: the system checks report it, the admin stays up
        return False


if _outbox_in_a_database():  # else the outbox lives in a file or server of its own: no table here to show
    admin.site.register(Delivery, DeliveryAdmin)
    admin.site.register(Endpoint, EndpointAdmin)
