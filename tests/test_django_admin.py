"""The outbox in Django's admin, through Django's test client: deliveries made by the real sender against
a loopback receiver, listed, filtered and searched; a delivery's page read-only, secrets masked, its
attempt log shown; the replay and enable actions going through the store (its rules hold)."""

import pytest

from .helpers import need_module

need_module("django", "Django")

SECRETS = ("hunter2", "s3cr3t-token", "query-secret")


@pytest.fixture
def made(hooks):
    """One delivery in each outcome, sent for real: delivered (200), dead on a 400, dead on a 410 (its endpoint
    disabled), and one held for that disabled endpoint. {name: id}."""
    from syncworkers.contrib.django import enqueue, release_outbox, sender

    hooks.route("POST", "/hooks/bad", status=400, body=b"order refused: no such sku")
    hooks.route("POST", "/hooks/gone", status=410)
    ids = {"ok": enqueue("/hooks/orders", {"order": 1}),
           "bad": enqueue("/hooks/bad?token=query-secret", {"order": 2, "card": {"password": "hunter2"}},
                          {"Authorization": "Bearer s3cr3t-token", "X-Trace": "trace-2"}),
           "gone": enqueue("/hooks/gone", {"order": 3})}
    sender().flush(timeout=30)
    ids["held"] = enqueue("/hooks/gone", {"order": 4})
    release_outbox()
    states = {name: sender().outbox.get(id).state for name, id in ids.items()}
    assert states == {"ok": "delivered", "bad": "dead", "gone": "dead", "held": "held"}
    return ids


def staff(username, *permissions):
    from django.contrib.auth.models import Permission, User
    from django.test import Client

    User.objects.filter(username=username).delete()
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="syncworkers",
                                                        codename__in=permissions))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def operator(django_db):
    """A staff member who may view and act on deliveries and endpoints."""
    return staff("operator", "view_delivery", "change_delivery", "view_endpoint", "change_endpoint")


def listed(response):
    assert response.status_code == 200, response.content[:500]
    return [obj.pk for obj in response.context["cl"].result_list]


def test_deliveries_are_listed_filtered_by_state_and_endpoint_and_found_by_id(made, operator):
    url = "/admin/syncworkers/delivery/"
    assert sorted(listed(operator.get(url))) == sorted(made.values())
    assert sorted(listed(operator.get(url, {"state__exact": "dead"}))) == sorted([made["bad"], made["gone"]])
    assert listed(operator.get(url, {"state__exact": "held"})) == [made["held"]]
    assert sorted(listed(operator.get(url, {"endpoint": "/hooks/gone"}))) == sorted([made["gone"], made["held"]])
    assert listed(operator.get(url, {"q": made["bad"]})) == [made["bad"]]
    assert listed(operator.get(url, {"q": made["bad"][:-4]})) == [made["bad"]]
    assert listed(operator.get(url, {"q": "msg_nothing"})) == []


def test_a_delivery_page_is_read_only_masks_secrets_and_shows_the_attempt_log(made, operator):
    page = operator.get(f"/admin/syncworkers/delivery/{made['bad']}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    for secret in SECRETS:
        assert secret not in html
    assert "Bearer" not in html and "trace-2" in html and "&quot;password&quot;: &quot;***&quot;" in html
    assert "/hooks/bad?***" in html  # the URL without its query string
    assert "order refused: no such sku" in html and "<td>400</td>" in html  # the attempt log, the answer
    assert 'name="_save"' not in html  # nothing to save
    listing = operator.get("/admin/syncworkers/delivery/").content.decode()
    for secret in SECRETS:
        assert secret not in listing
    assert operator.post(f"/admin/syncworkers/delivery/{made['bad']}/change/", {"state": "pending"}).status_code == 403
    assert operator.get("/admin/syncworkers/delivery/add/").status_code == 403
    assert operator.get(f"/admin/syncworkers/delivery/{made['bad']}/delete/").status_code == 403


def test_replay_sends_dead_deliveries_again_through_the_store(made, operator, hooks):
    from syncworkers.contrib.django import release_outbox, sender

    selected = [made["ok"], made["bad"], made["gone"]]
    done = operator.post("/admin/syncworkers/delivery/", {"action": "replay", "_selected_action": selected},
                         follow=True)
    assert [str(m) for m in done.context["messages"]] == [
        "2 dead deliveries replayed: due now; 1 not dead, left as they were."]
    outbox = sender().outbox
    # the store's rules: the one whose endpoint is disabled is held, not sent; the delivered one stays delivered
    assert {name: outbox.get(made[name]).state for name in ("ok", "bad", "gone")} == {
        "ok": "delivered", "bad": "pending", "gone": "held"}
    assert outbox.get(made["bad"]).attempts == 0
    hooks.route("POST", "/hooks/bad", status=200)
    sender().flush(timeout=30)
    release_outbox()
    assert outbox.get(made["bad"]).state == "delivered"
    assert [c.header("webhook-id") for c in hooks.calls("/hooks/bad")] == [made["bad"]] * 2  # the same id again


def test_enable_releases_the_endpoints_held_deliveries(made, operator, hooks):
    from syncworkers.contrib.django import sender

    page = operator.get("/admin/syncworkers/endpoint/")
    assert page.status_code == 200
    gone = [e for e in page.context["cl"].result_list if e.disabled_at is not None]
    assert [(e.target, e.held) for e in gone] == [(f"127.0.0.1:{hooks.port}/hooks/gone", 1)]
    assert [e.target for e in operator.get("/admin/syncworkers/endpoint/", {"enabled": "no"}).context["cl"].result_list] \
        == [gone[0].target]
    assert "status 410 Gone" in page.content.decode()
    done = operator.post("/admin/syncworkers/endpoint/", {"action": "enable", "_selected_action": [gone[0].target]},
                         follow=True)
    assert [str(m) for m in done.context["messages"]] == ["1 endpoints enabled; 1 held deliveries released."]
    outbox = sender().outbox
    assert outbox.get(made["held"]).state == "pending"
    assert all(e.enabled for e in outbox.endpoints())


def test_a_staff_member_who_may_only_view_sees_the_outbox_but_cannot_replay(made, django_db):
    from syncworkers.contrib.django import sender

    viewer = staff("viewer", "view_delivery", "view_endpoint")
    page = viewer.get("/admin/syncworkers/delivery/")
    assert page.status_code == 200 and made["bad"] in page.content.decode()
    assert page.context["action_form"] is None  # no action offered
    viewer.post("/admin/syncworkers/delivery/", {"action": "replay", "_selected_action": [made["bad"]]})
    assert sender().outbox.get(made["bad"]).state == "dead"
    assert staff("nobody").get("/admin/syncworkers/delivery/").status_code == 403


def test_a_delivery_page_shows_the_trace_context_it_was_enqueued_in(hooks, operator, spans):
    from syncworkers.contrib.django import enqueue, release_outbox

    with spans.app.start_as_current_span("POST /pay") as span:
        traced = enqueue("/hooks/orders", {"order": 9})
    untraced = enqueue("/hooks/orders", {"order": 10})
    release_outbox()
    context = span.get_span_context()
    page = operator.get(f"/admin/syncworkers/delivery/{traced}/change/")
    assert page.status_code == 200, (page.status_code, page.get("Location"), list(page.context or [])[:0])
    html = page.content.decode()
    assert f"00-{context.trace_id:032x}-{context.span_id:016x}-" in html and "Trace context" in html
    assert "00-" not in operator.get(f"/admin/syncworkers/delivery/{untraced}/change/").content.decode()
