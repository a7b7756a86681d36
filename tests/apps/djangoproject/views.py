from django.conf import settings
from django.db import transaction
from django.http import JsonResponse

from syncworkers.contrib.django import enqueue, webhook_receiver

from .models import Order

RECEIVED = []


def create_order(request, n):
    """Saves an order and enqueues its webhook in one transaction; ?fail=1 rolls both back."""
    try:
        with transaction.atomic():
            Order.objects.create(number=n)
            delivery_id = enqueue("/hooks/orders", {"order": n})
            if request.GET.get("fail"):
                raise RuntimeError("payment refused")
    except RuntimeError:
        return JsonResponse({"ok": False}, status=402)
    return JsonResponse({"ok": True, "id": delivery_id})


@webhook_receiver(secret=lambda: settings.RECEIVER_SECRET)
def receive(request, payload):
    RECEIVED.append(payload)
    return JsonResponse({"ok": True})
