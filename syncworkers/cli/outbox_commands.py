"""``syncworkers outbox``: inspect, deliver, replay and repair a webhook outbox (SQLite or PostgreSQL)."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict, Optional, Sequence

import click

from ..exceptions import SyncWorkersError, safe_url
from ..observability.redaction import Redactor, redact_text

from .app import CLIError, EXIT_FAILED, _setup, cli, echo
from .formats import _Progress, _attempt_dict, _clip, _read_ids, _seconds, _when, parse_duration, parse_since


# -- outbox ------------------------------------------------------------------------

def _open_outbox(path: Optional[str], url: Optional[str]) -> Any:
    """The outbox at ``--url`` (PostgreSQL or SQLite) or ``--path`` (an existing SQLite file).

    An outbox file is never created here (a typo would show an empty outbox);
    PostgreSQL tables are, as on any first use.
    """
    from ..config.connections import SQLITE
    from ..outbox.urls import outbox_location

    location = _location(path, url)
    try:
        where = outbox_location(location) if url is not None else None
    except SyncWorkersError as exc:
        raise CLIError(str(exc)) from exc
    if where is None or where.kind == SQLITE:
        file = (where.path or "") if where is not None else location
        if not os.path.isfile(file):
            option = "--url" if url is not None else "--path"
            raise CLIError(f"{option} {_shown(location)!r}: no such outbox file")
    return _opened(location, lambda box: box.counts())  # connect now: a refused connection is one line


def _shown(location: str) -> str:
    """An outbox location fit to print: a database URL without its password; a SQLite URL or a
    file path as given (its folder names are not secrets, whatever they look like)."""
    from ..outbox.urls import outbox_location

    try:
        return outbox_location(location).shown
    except SyncWorkersError:
        return safe_url(location) or ""


def _redactor(location: str) -> Redactor:
    """What masks the text of *location*'s errors: its password, and the rule."""
    from ..outbox.urls import outbox_location

    try:
        return outbox_location(location).redactor()
    except SyncWorkersError:
        return Redactor()


def _location(path: Optional[str], url: Optional[str]) -> str:
    if url is not None and path is None:
        return url
    if path is not None and url is None:
        return path
    raise CLIError("give --url (or WEBHOOK_OUTBOX_URL) or --path (or WEBHOOK_OUTBOX_PATH), one of them")


def _opened(location: str, check: Any) -> Any:
    """The store at *location*, on which *check(store)* ran; its failures as one CLIError line."""
    from ..outbox import open_outbox

    box = None
    try:
        box = open_outbox(location)
        check(box)
    except Exception as exc:
        if box is not None:
            box.close()
        if isinstance(exc, SyncWorkersError):  # not a database, a newer schema, a bad URL
            raise CLIError(str(exc)) from exc
        # The database's own errors (psycopg): the reason, never the URL's password.
        raise CLIError(f"cannot open outbox {_shown(location)!r}: {type(exc).__name__}: "
                       f"{_redactor(location).text(str(exc))}") from exc
    return box


def _PATH_OPTION(command: Any) -> Any:
    """``--url`` / ``--path``: where the outbox is (one of them)."""
    command = click.option("--path", default=None, envvar="WEBHOOK_OUTBOX_PATH", show_envvar=True,
                           type=click.Path(dir_okay=False), help="The outbox's SQLite file.")(command)
    return click.option("--url", default=None, envvar="WEBHOOK_OUTBOX_URL", show_envvar=True,
                        help="The outbox: postgresql://user@host/db, sqlite:///relative/path, "
                             "sqlite:////absolute/path.")(command)


@cli.group()
def outbox() -> None:
    """A webhook outbox: stats, list, show; endpoints, enable; deliver what is due; replay dead deliveries;
    purge delivered ones; init."""


@outbox.command()
@_PATH_OPTION
def init(path: Optional[str], url: Optional[str]) -> None:
    """Create the outbox's tables (PostgreSQL) or file (SQLite) now; safe to run again."""

    location = _location(path, url)
    with _opened(location, lambda box: box.counts()):  # the first use creates the tables
        pass
    echo(f"outbox ready: {_shown(location)}")


@outbox.command()
@_PATH_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def stats(path: Optional[str], url: Optional[str], as_json: bool) -> None:
    """How many deliveries are pending (in flight included), delivered, dead and held (endpoint disabled)."""
    with _open_outbox(path, url) as box:
        counts = box.counts()
        check = getattr(box, "check", None)  # a file's own consistency check (SQLite)
        try:
            problem = None if check is None else check()
        except box.errors as exc:
            problem = str(exc)
        if problem is not None:
            raise CLIError(f"outbox {box.path!r} is damaged: {' '.join(problem.split())}")
    if as_json:
        echo(json.dumps(counts))
        return
    for state, count in counts.items():
        echo(f"{state:10} {count}")


@outbox.command(name="list")
@_PATH_OPTION
@click.option("--state", type=click.Choice(["pending", "in_flight", "delivered", "dead", "held"]), default=None)
@click.option("--endpoint", default=None, help="Only this endpoint (as it was given to enqueue()).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON array with bodies and headers (secret values hidden).")
def list_deliveries(path: Optional[str], url: Optional[str], state: Optional[str], endpoint: Optional[str], limit: int, as_json: bool) -> None:
    """Deliveries, most recently updated first, each with its last attempt."""
    with _open_outbox(path, url) as box:
        deliveries = box.list(state=state, endpoint=endpoint, limit=limit)
        last = box.last_attempts([d.id for d in deliveries])
    if as_json:
        echo(json.dumps([{**d.to_dict(), "last_attempt": _attempt_dict(last.get(d.id))}
                               for d in deliveries], indent=2))
        return
    for d in deliveries:
        error = f"  {d.last_error}" if d.last_error else ""
        attempt = last.get(d.id)
        tried = "" if attempt is None else f"last attempt {_when(attempt.at)} {attempt.kind} {_seconds(attempt)}  "
        echo(f"{d.id}  {d.state:9}  attempts={d.attempts}  status={d.last_status or '-'}  "
                   f"updated={_when(d.updated_at)}  {tried}{d.endpoint}{error}")


@outbox.command()
@_PATH_OPTION
@click.argument("delivery_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (secret values hidden).")
def show(path: Optional[str], url: Optional[str], delivery_id: str, as_json: bool) -> None:
    """A delivery and its attempt log (time, status, duration, kind, the answer's first 4 KB)."""
    with _open_outbox(path, url) as box:
        delivery = box.get(delivery_id)
        attempts = box.attempts(delivery_id) if delivery is not None else []
    if delivery is None:
        raise CLIError(f"no delivery {delivery_id!r} in the outbox")
    data = delivery.to_dict()
    data["attempt_log"] = [_attempt_dict(a) for a in attempts]
    if as_json:
        echo(json.dumps(data, indent=2))
        return
    from ..outbox.health import endpoint_of, shown

    lines = [
        ("id", data["id"]), ("endpoint", data["endpoint"]), ("url", data["url"]),
        ("receiver", shown(endpoint_of(delivery.url))), ("state", data["state"]),
        ("attempts", data["attempts"]), ("created", _when(delivery.created_at)),
        ("updated", _when(delivery.updated_at)),
        ("next attempt", _when(delivery.next_attempt_at) if delivery.state == "pending" else "-"),
        ("delivered", _when(delivery.delivered_at)), ("last status", data["last_status"] or "-"),
        ("last error", data["last_error"] or "-"),
    ]
    for name, value in lines:
        echo(f"{name + ':':14}{value}")
    echo(f"{'headers:':14}" + (", ".join(f"{k}: {v}" for k, v in data["headers"].items()) or "-"))
    echo(f"{'body:':14}{_clip(redact_text(data['body']) if data['body_encoding'] == 'utf-8' else '<binary>')}")
    echo(f"attempt log ({len(attempts)}, oldest first):" if attempts else "attempt log: no attempt yet")
    for n, entry in enumerate(data["attempt_log"], 1):
        status = entry["status"] if entry["status"] is not None else "-"
        error = f"  {entry['error']}" if entry["error"] else ""
        echo(f"  {n:2}. {_when(entry['at'])}  {entry['kind']:10}  status={status}  "
                   f"{entry['duration']:.3f}s{error}")
        if entry["body"]:
            echo(f"      answer: {_clip(entry['body'])}")


@outbox.command()
@_PATH_OPTION
@click.option("--json", "as_json", is_flag=True, help="A JSON array.")
def endpoints(path: Optional[str], url: Optional[str], as_json: bool) -> None:
    """Each endpoint (host + path) with its state: enabled or disabled, since when, why, deliveries held."""
    from ..outbox.health import shown

    with _open_outbox(path, url) as box:
        found = box.endpoints()
    rows = [{"endpoint": shown(e.endpoint), "state": "enabled" if e.enabled else "disabled",
             "disabled_at": e.disabled_at, "failing_since": e.failing_since, "reason": e.reason,
             "last_status": e.last_status, "held": e.held} for e in found]
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    if not rows:
        echo("no endpoint attempted yet")
        return
    for row in rows:
        if row["disabled_at"] is not None:
            since = f"since {_when(row['disabled_at'])}"
        elif row["failing_since"] is not None:
            since = f"failing since {_when(row['failing_since'])}"
        else:
            since = "-"
        reason = f"  {row['reason']}" if row["reason"] else ""
        echo(f"{row['endpoint']}  {row['state']:8}  {since}  held={row['held']}{reason}")


@outbox.command()
@_PATH_OPTION
@click.argument("endpoint", metavar="ENDPOINT")
def enable(path: Optional[str], url: Optional[str], endpoint: str) -> None:
    """Enable a disabled ENDPOINT again and release its held deliveries (due now).

    ENDPOINT is as `outbox endpoints` prints it (host[:port]/path), or a URL to it.
    """
    from ..outbox.health import endpoint_of, shown

    wanted = {endpoint, endpoint_of(endpoint)} if "://" in endpoint else {endpoint}
    with _open_outbox(path, url) as box:
        found = [e for e in box.endpoints() if e.endpoint in wanted or shown(e.endpoint) in wanted]
        if not found:
            raise CLIError(f"no endpoint {endpoint!r} in the outbox (`syncworkers outbox endpoints` lists them)")
        if len(found) > 1:
            raise CLIError(f"{endpoint!r} names {len(found)} endpoints; give one as host[:port]/path in full")
        target = found[0]
        released = box.enable_endpoint(target.endpoint)
    if target.enabled:
        echo(f"{shown(target.endpoint)} was enabled already; released {released} held")
    else:
        echo(f"enabled {shown(target.endpoint)}; released {released} held deliver"
                   f"{'y' if released == 1 else 'ies'}, due now")


#: Ids replayed per transaction by ``outbox replay`` (the progress bar moves between them).
REPLAY_CHUNK = 500


@outbox.command()
@_PATH_OPTION
@click.option("--id", "ids", multiple=True, help="A dead delivery's id (repeatable).")
@click.option("--ids-from", "ids_from", default=None, metavar="FILE",
              help="Dead deliveries' ids, one per line, from FILE ('-': stdin).")
@click.option("--endpoint", default=None, help="Dead deliveries of this endpoint.")
@click.option("--since", default=None, help="Dead deliveries that died since: an ISO time or a duration ago (2h).")
def replay(path: Optional[str], url: Optional[str], ids: Sequence[str], ids_from: Optional[str],
           endpoint: Optional[str], since: Optional[str]) -> None:
    """Send dead deliveries again (due now, attempts reset); filters combine, one at least.

    Thousands of ids are replayed in batches, with a progress bar on a terminal.
    """
    id_list = list(dict.fromkeys([*ids, *_read_ids(ids_from)]))
    if ids_from is not None and not id_list and endpoint is None and since is None:
        raise CLIError(f"--ids-from {ids_from!r}: no ids in it")
    if not id_list and endpoint is None and since is None:
        raise CLIError("replay needs --id, --endpoint or --since (they combine), or --ids-from FILE")
    try:
        since_at = None if since is None else parse_since(since, time.time())
    except ValueError as exc:
        raise CLIError(f"--since: {exc}") from None
    count = 0
    with _open_outbox(path, url) as box:
        if not id_list:
            count = box.replay(endpoint=endpoint, since=since_at)
        else:
            progress = _Progress(len(id_list), "replaying")
            try:
                for start in range(0, len(id_list), REPLAY_CHUNK):
                    count += box.replay(ids=id_list[start:start + REPLAY_CHUNK], endpoint=endpoint,
                                        since=since_at)
                    progress.show(min(start + REPLAY_CHUNK, len(id_list)))
            finally:
                progress.close()
    echo(f"replayed {count} dead deliver{'y' if count == 1 else 'ies'}")


@outbox.command()
@_PATH_OPTION
@click.option("--timeout", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="Seconds at most; deliveries still on the wire then stay pending.")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]))
@click.option("--env-file", type=click.Path(dir_okay=False), default=None,
              help="Read environment variables from this file first.")
def deliver(path: Optional[str], url: Optional[str], timeout: float, log_level: str, log_format: str,
            env_file: Optional[str]) -> None:
    """Deliver what is due now, then exit with a summary line (cron).

    Signing, timeouts and the retry schedule come from the WEBHOOK_* and HTTP_*
    variables, as for a running sender. A failed attempt is scheduled again on
    the retry schedule, for a later run. Exit 1 when a delivery died, or the
    timeout came with deliveries still due.
    """
    _setup(log_level, log_format, env_file)
    from ..workers.webhook import WebhookSenderWorker

    box = _open_outbox(path, url)
    try:
        sender = WebhookSenderWorker(outbox=box, name="outbox-deliver")
        try:
            summary = _deliver_due(sender, timeout)
        finally:
            sender.close()
        pending = box.counts()["pending"]
        next_due = box.next_due()
    finally:
        box.close()
    later = f" (next due {_when(next_due)})" if pending and next_due is not None else ""
    echo(f"delivered {summary['delivered']}, retry scheduled {summary['retried']}, "
         f"postponed {summary['postponed']}, dead {summary['dead']}; {pending} pending{later}")
    if summary["dead"] or summary["timed_out"]:
        sys.exit(EXIT_FAILED)


def _deliver_due(sender: Any, timeout: float) -> Dict[str, Any]:
    """Drive *sender*'s outbox loop until nothing is due now and nothing is on the wire, or *timeout*.

    The loop waits on the sender's stop signal, never on a polled predicate: the dispatcher
    ends the flush itself once nothing is due now (``due_only``), or at the deadline.
    """
    dispatcher = sender.outbox_producer.dispatcher
    box = dispatcher.outbox
    progress = _Progress(box.counts()["pending"], "delivering")

    def outcomes() -> Dict[str, Any]:
        counts = sender.health()["deliveries"]
        return {key: int(counts[key]) for key in ("delivered", "retried", "postponed", "dead")}

    try:
        if timeout > 0:  # with no time at all nothing is started: what is due stays pending
            dispatcher.flush(timeout, sender.stop_event, due_only=True,
                             on_turn=lambda: progress.show(sum(outcomes().values())))
        summary = outcomes()
        progress.show(sum(summary.values()))  # the loop may end without another turn
    finally:
        progress.close()
    due = box.next_due()
    left_due = due is not None and due <= box.clock()
    return {**summary, "timed_out": left_due or dispatcher.in_flight > 0}


@outbox.command()
@_PATH_OPTION
@click.option("--older-than", "older_than", required=True, help="Age, e.g. 7d, 12h, 30m.")
def purge(path: Optional[str], url: Optional[str], older_than: str) -> None:
    """Delete delivered deliveries older than --older-than."""
    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        raise CLIError(f"--older-than: {exc}") from None
    with _open_outbox(path, url) as box:
        count = box.purge(older_than=seconds)
    echo(f"purged {count} delivered deliver{'y' if count == 1 else 'ies'} older than {older_than}")


