"""The JSON envelope a message travels in on a Redis queue: its id, body, timestamp and delivery count.

Pure: no Redis. A value another producer pushed (not one of our envelopes) is
read as a message whose body is that value, and wrapped in an envelope the first
time it goes back to the queue, so that its id and delivery count survive from then on.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, Optional, Tuple, Union

from ..message import Message

logger = logging.getLogger(__name__)

#: Key marking our envelopes (its value is the format version), so that another producer's
#: JSON object with an "id" or a "body" is never mistaken for one.
ENVELOPE_KEY = "syncworkers"

Raw = Union[bytes, str]


def encode(message: Message, deliveries: int = 0) -> str:
    data = message.to_dict()
    data[ENVELOPE_KEY] = 1
    data["deliveries"] = deliveries
    try:
        return json.dumps(data, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"message {message.id} is not JSON-serialisable: {exc}") from None


def decode(raw: Raw) -> Tuple[Message, Optional[Dict[str, Any]]]:
    """The message in *raw*, and the envelope when it is one of ours."""
    try:
        value = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return Message(body=text), None
    if isinstance(value, dict) and value.get(ENVELOPE_KEY) == 1:
        try:
            return Message.from_dict(value), value
        except (TypeError, ValueError):
            logger.warning("malformed syncworkers envelope taken as a plain value")
    return Message(body=value), None


def next_delivery(raw: Raw, held: Optional[Message] = None) -> Tuple[str, int]:
    """The envelope to store for the next delivery of *raw*, and how many deliveries it has had.

    A plain value is wrapped in an envelope (keeping *held*'s id when given), so
    that its count and id survive from now on.
    """
    message, envelope = decode(raw)
    if envelope is None:
        if held is not None:
            message = Message(body=message.body, id=held.id, timestamp=held.timestamp)
        envelope = json.loads(encode(message))
    try:
        deliveries = max(0, int(envelope.get("deliveries") or 0)) + 1
    except (TypeError, ValueError):
        deliveries = 1
    return json.dumps({**envelope, "deliveries": deliveries}, separators=(",", ":")), deliveries


__all__ = ["ENVELOPE_KEY", "Raw", "decode", "encode", "next_delivery"]
