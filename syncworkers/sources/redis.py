"""RedisListConsumer: a reliable work queue on Redis lists (optional extra ``syncworkers[redis]``).

Producers LPUSH JSON envelopes; each consumer BLMOVEs the oldest message into
its own processing list, where it stays until ``ack()``. A consumer that dies
leaves its messages there and stops refreshing its heartbeat key; once that key
expires, any other consumer's ``recover()`` moves them back to the queue. So a
message is delivered at least once, never lost: handlers must tolerate a
redelivery (the message id stays the same). Keys, all under the queue name::

    {queue}                       waiting messages (LPUSH in, consumed from the right)
    {queue}:processing:{id}       messages consumer {id} holds
    {queue}:consumer:{id}         its heartbeat, expiring heartbeat_ttl after the last refresh
    {queue}:consumers             ids of consumers that may hold messages
    {queue}:dead                  messages out of deliveries, or nacked without requeue

While consume() runs, a small thread refreshes the heartbeat every third of
``heartbeat_ttl``, so a message whose processing takes long is not taken for
a dead consumer's and redelivered meanwhile.
Needs Redis >= 6.2 (BLMOVE, LMOVE).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from typing import Any, Dict, Iterator, List, Optional, Tuple

try:
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "RedisListConsumer needs the redis package: pip install 'syncworkers[redis]'"
    ) from exc

from ..config.connections import REDIS, parse_connection_url
from ..config.defaults import MAX_COUNT
from ..config.validators import checked, count, seconds
from ..exceptions import ConfigError
from ..message import Message, owner_id
from .base import Source
from .redis_envelope import ENVELOPE_KEY, Raw, decode, encode, next_delivery  # noqa: F401 - ENVELOPE_KEY re-exported

logger = logging.getLogger(__name__)

#: Used when neither ``url`` nor the REDIS_URL environment variable is given.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: Seconds one BLMOVE waits for a message: also how long ``close()`` may take to end consume().
DEFAULT_BLOCK_TIMEOUT = 0.5
#: Deliveries of one message (nacks and crashes) before it goes to ``{queue}:dead``.
DEFAULT_MAX_DELIVERIES = 5
#: Seconds after its last heartbeat that a consumer is taken for dead.
DEFAULT_HEARTBEAT_TTL = 15.0
#: Longest pause between two ``recover()`` runs inside consume().
RECOVER_INTERVAL = 5.0
#: Added to block_timeout for the socket timeout, so that the server answers a BLMOVE first.
SOCKET_TIMEOUT_MARGIN = 5.0
CONNECT_TIMEOUT = 5.0
#: Longest wait between reconnection attempts of consume() while Redis is unreachable.
MAX_RECONNECT_DELAY = 5.0

# Move one exact item from KEYS[1] to KEYS[2] as ARGV[2], pushed with ARGV[3] (LPUSH/RPUSH).
# LREM makes the move happen once whoever races; with KEYS[3] (a consumer's heartbeat)
# only while that key does not exist, so a consumer that came back keeps its messages.
_MOVE = """
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call(ARGV[3], KEYS[2], ARGV[2])
return 1
"""
# Drop a dead consumer that holds nothing from the registry (it re-registers if it was only slow).
_FORGET = """
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('LLEN', KEYS[2]) == 0 then
  return redis.call('SREM', KEYS[3], ARGV[1])
end
return 0
"""


class RedisListConsumer(Source):
    """A reliable queue on Redis lists: consume(), then ack() or nack() each message.

    One instance is one consumer (one ``consumer_id``, unique across the
    cluster); ack()/nack() may come from other threads. ``client`` (a redis-py
    client without ``decode_responses``) replaces ``url``; give it a
    ``socket_timeout`` above ``block_timeout``.
    """

    def __init__(self, queue: str, url: Optional[str] = None, *,
                 block_timeout: float = DEFAULT_BLOCK_TIMEOUT,
                 max_deliveries: int = DEFAULT_MAX_DELIVERIES,
                 consumer_id: Optional[str] = None,
                 heartbeat_ttl: float = DEFAULT_HEARTBEAT_TTL,
                 client: Any = None):
        super().__init__()
        errors: Dict[str, str] = {}
        if not isinstance(queue, str) or not queue:
            errors["queue"] = f"queue must be a non-empty string, got {queue!r}"
        block_timeout = checked("block_timeout", block_timeout, seconds(above=0, text=False), errors, 1.0)
        heartbeat_ttl = checked("heartbeat_ttl", heartbeat_ttl, seconds(above=0, text=False), errors, 1.0)
        if "block_timeout" not in errors and "heartbeat_ttl" not in errors and heartbeat_ttl <= block_timeout:
            errors["heartbeat_ttl"] = (f"heartbeat_ttl must be longer than block_timeout, got "
                                       f"heartbeat_ttl={heartbeat_ttl!r} block_timeout={block_timeout!r}")
        max_deliveries = checked("max_deliveries", max_deliveries, count(maximum=MAX_COUNT, text=False), errors, 1)
        if consumer_id is not None and (not isinstance(consumer_id, str) or not consumer_id):
            errors["consumer_id"] = f"consumer_id must be a non-empty string, got {consumer_id!r}"
        if errors:
            raise ConfigError("invalid RedisListConsumer: " + "; ".join(errors.values()), errors)

        self.queue = queue
        self.block_timeout = block_timeout
        self.max_deliveries = max_deliveries
        self.heartbeat_ttl = heartbeat_ttl
        self.consumer_id = consumer_id or owner_id()
        self._owns_client = client is None
        if client is None:
            try:
                where = parse_connection_url(url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL, (REDIS,),
                                             paths=False)
            except ValueError as exc:
                raise ConfigError(f"invalid Redis URL: {exc}", {"url": str(exc)}) from None
            self._url = where.shown  # never the URL itself: it may carry a password
            try:
                client = redis.Redis.from_url(
                    where.dsn,
                    socket_timeout=block_timeout + SOCKET_TIMEOUT_MARGIN,
                    socket_connect_timeout=CONNECT_TIMEOUT,
                    # A few quick retries: consume() has its own interruptible reconnect loop,
                    # which redis-py's default (10 retries, long backoff) would hold up.
                    retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
                )
            except ValueError as exc:
                reason = where.redactor().text(str(exc))
                raise ConfigError(f"invalid Redis URL {self._url!r}: {reason}") from None
        else:
            self._url = "<client>"
        self._client = client
        self._move = client.register_script(_MOVE)
        self._forget = client.register_script(_FORGET)
        self._recover_interval = min(RECOVER_INTERVAL, heartbeat_ttl)
        self._processing_key = self._processing_of(self.consumer_id)
        self._lock = threading.Lock()
        self._in_flight: Dict[str, List[Tuple[Raw, Message]]] = {}  # id -> (popped bytes, message)
        self._last_beat: Optional[float] = None
        #: False while the last attempt to reach Redis failed (run_once() reports it).
        self.available = True

    # -- keys -------------------------------------------------------------------

    def _processing_of(self, consumer_id: str) -> str:
        return f"{self.queue}:processing:{consumer_id}"

    def _heartbeat_of(self, consumer_id: str) -> str:
        return f"{self.queue}:consumer:{consumer_id}"

    @property
    def _consumers_key(self) -> str:
        return f"{self.queue}:consumers"

    @property
    def _dead_key(self) -> str:
        return f"{self.queue}:dead"

    # -- producing and consuming ------------------------------------------------

    def push(self, item: Any) -> str:
        """Queue *item* (a Message, or the body of a new one) and return its message id."""
        message = item if isinstance(item, Message) else Message(body=item)
        self._client.lpush(self.queue, encode(message))
        return message.id

    def consume(self) -> Iterator[Message]:
        """Yield messages, oldest first, until the stop event is set.

        Each stays in this consumer's processing list until ack() or nack(), or
        until the loop asks for the next message, which acknowledges it.
        While Redis is unreachable the loop logs, waits (interruptibly) and
        reconnects; a failed authentication or a Redis error is raised.
        """
        ready = False  # heartbeat set and own leftovers requeued since the last (re)connection
        failures = 0
        next_recover = 0.0
        done = threading.Event()
        beater = threading.Thread(target=self._keep_beating, args=(done,), daemon=True,
                                  name=f"syncworkers-redis-heartbeat-{self.consumer_id}")
        beater.start()
        try:
            while not self.stop_event.is_set():
                try:
                    self._beat(force=not ready)
                    if not ready:
                        self._requeue_leftovers()
                        ready = True
                    if time.monotonic() >= next_recover:
                        self.recover()
                        next_recover = time.monotonic() + self._recover_interval
                    raw = self._client.blmove(self.queue, self._processing_key,
                                              self.block_timeout, "RIGHT", "LEFT")
                except redis.AuthenticationError:
                    raise
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    self.available = False
                    failures += 1
                    delay = min(MAX_RECONNECT_DELAY, 0.1 * 2 ** failures)
                    logger.warning("Redis at %s unavailable for queue %r (%s: %s); retrying in %.1f s",
                                   self._url, self.queue, type(exc).__name__, exc, delay)
                    ready = False
                    self.stop_event.wait(delay)
                    continue
                failures = 0
                self.available = True
                # Yielded even if the stop event was set meanwhile: it is in our processing
                # list already, and only the consumer can settle it.
                if raw is not None:
                    message = self._track(raw)
                    yield message
                    # Asking for the next message settles this one: a plain
                    # `for m in source.consume(): process(m)` loop never calls ack().
                    try:
                        self.ack(message)
                    except (redis.ConnectionError, redis.TimeoutError) as exc:
                        logger.warning("could not acknowledge message %s on queue %r (%s); it will "
                                       "be redelivered", message.id, self.queue, type(exc).__name__)
        finally:
            done.set()
            beater.join(5)
            if self._owns_client and self.stop_event.is_set():
                self._client.connection_pool.disconnect(inuse_connections=False)

    def _keep_beating(self, done: threading.Event) -> None:
        """Refresh the heartbeat while the loop runs, so a long process_message is not taken for death."""
        while not done.wait(self.heartbeat_ttl / 3) and not self.stop_event.is_set():
            try:
                self._beat(force=True)
            except redis.RedisError as exc:  # the consume loop reports outages; just try again later
                logger.debug("heartbeat for queue %r failed: %s", self.queue, type(exc).__name__)

    def ack(self, message: Message) -> None:
        """*message* is done: remove it from the processing list (unknown or settled ones are ignored)."""
        held = self._settle(message)
        if held is not None:
            self._client.lrem(self._processing_key, 1, held[0])

    def nack(self, message: Message, requeue: bool = True) -> None:
        """*message* failed: back to the end of the queue with its delivery count raised.

        After ``max_deliveries`` deliveries, or with ``requeue=False``, it goes to
        ``{queue}:dead`` instead.
        """
        held = self._settle(message)
        if held is not None:
            self._release(self._processing_key, held[0], held=held[1], front=False,
                          dead=not requeue)

    def pending(self) -> int:
        """Messages waiting in the queue."""
        return int(self._client.llen(self.queue))

    def processing(self) -> int:
        """Messages this consumer holds (consumed, not yet settled)."""
        return int(self._client.llen(self._processing_key))

    def dead(self) -> List[Message]:
        """Messages in ``{queue}:dead``, oldest first."""
        raws = self._client.lrange(self._dead_key, 0, -1)
        return [decode(raw)[0] for raw in reversed(raws)]

    def recover(self) -> int:
        """Move the messages of dead consumers (heartbeat expired) back to the front of the queue.

        Each recovery counts as a delivery, so a message that keeps killing its
        consumer ends in ``{queue}:dead``. Returns how many messages were moved.
        """
        moved = 0
        for consumer_id in self._dead_consumers():
            heartbeat, processing = self._heartbeat_of(consumer_id), self._processing_of(consumer_id)
            count = 0
            # Newest first, each pushed to the front: the oldest ends up first in line.
            for raw in self._client.lrange(processing, 0, -1):
                done = self._release(processing, raw, guard=heartbeat, front=True)
                if done < 0:  # it came back to life
                    break
                count += done
            self._forget(keys=[heartbeat, processing, self._consumers_key], args=[consumer_id])
            if count:
                logger.info("recovered %d message(s) of dead consumer %r on queue %r",
                            count, consumer_id, self.queue)
            moved += count
        return moved

    def close(self) -> None:
        """End every running consume() within block_timeout and drop idle connections.

        Unsettled messages stay in the processing list: ack()/nack() still work,
        and whatever is left is recovered once the heartbeat expires.
        """
        super().close()
        if self._owns_client:
            self._client.connection_pool.disconnect(inuse_connections=False)

    # -- internals --------------------------------------------------------------

    def _dead_consumers(self) -> List[str]:
        """Registered consumers, other than this one, whose heartbeat has expired."""
        others = [m.decode() if isinstance(m, bytes) else m
                  for m in self._client.smembers(self._consumers_key)]
        others = [c for c in others if c != self.consumer_id]
        if not others:
            return []
        with self._client.pipeline(transaction=False) as pipe:
            for consumer_id in others:
                pipe.exists(self._heartbeat_of(consumer_id))
            alive = pipe.execute()
        return [c for c, live in zip(others, alive) if not live]

    def _beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and self._last_beat is not None and now - self._last_beat < self.heartbeat_ttl / 3:
            return
        with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._heartbeat_of(self.consumer_id), self.consumer_id,
                     px=max(1, int(self.heartbeat_ttl * 1000)))
            pipe.sadd(self._consumers_key, self.consumer_id)
            pipe.execute()
        self._last_beat = now

    def _track(self, raw: Raw) -> Message:
        message, _ = decode(raw)
        with self._lock:
            self._in_flight.setdefault(message.id, []).append((raw, message))
        return message

    def _settle(self, message: Message) -> Optional[Tuple[Raw, Message]]:
        with self._lock:
            entries = self._in_flight.get(message.id)
            if not entries:
                return None
            index = next((i for i, (_, m) in enumerate(entries) if m is message), 0)
            held = entries.pop(index)
            if not entries:
                del self._in_flight[message.id]
            return held

    def _release(self, source: str, raw: Raw, *, front: bool, held: Optional[Message] = None,
                 guard: Optional[str] = None, dead: bool = False) -> int:
        """Move *raw* from *source* back to the queue, or to :dead when out of deliveries."""
        data, deliveries = next_delivery(raw, held)
        to_dead = dead or deliveries >= self.max_deliveries
        if to_dead:
            target, command = self._dead_key, "LPUSH"
        else:
            target, command = self.queue, "RPUSH" if front else "LPUSH"
        keys = [source, target] + ([guard] if guard else [])
        done = int(self._move(keys=keys, args=[raw, data, command]))
        if done > 0 and to_dead:
            logger.warning("message moved to %r after %d deliveries", self._dead_key, deliveries)
        return done

    def _requeue_leftovers(self) -> None:
        """Requeue what our processing list holds beyond the messages in flight here.

        Left by an earlier process with the same consumer_id, or by a BLMOVE
        whose reply a broken connection lost.
        """
        with self._lock:
            in_flight = Counter(raw for entries in self._in_flight.values() for raw, _ in entries)
        for raw in self._client.lrange(self._processing_key, 0, -1):
            if in_flight[raw] > 0:
                in_flight[raw] -= 1
            else:
                self._release(self._processing_key, raw, front=True)

    def __repr__(self) -> str:
        return (f"RedisListConsumer(queue={self.queue!r}, url={self._url!r}, "
                f"consumer_id={self.consumer_id!r})")


__all__ = ["RedisListConsumer", "DEFAULT_REDIS_URL"]
