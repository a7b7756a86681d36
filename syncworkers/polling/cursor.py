"""IncrementalCursor: poll only what changed since the highest value seen (``updated_since``).

Pure: it reads values out of items and compares them; the poller loads and
stores the value (a :mod:`~syncworkers.polling.state` store, under the poller's name)
and decides when it may advance.

Delivery is **at-least-once**. The stored value advances only after
``process_message`` returned for every item of a tick, so a crash (or an
exception) makes the next tick read those items again rather than skip them.
The next tick asks for items whose field is ``>=`` the stored value: the
items that carry exactly that value arrive again. De-duplicate on the items'
own ids (keep the ids processed, skip repeats).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Optional, Tuple

from ..exceptions import ConfigError
from .pagination import lookup


@dataclass(frozen=True)
class IncrementalCursor:
    """Send ``param=<highest field value seen>`` with the first page of each tick.

    ``field`` is a dotted path inside each item (``updated_at``,
    ``attributes.modified``); values are numbers or strings (ISO 8601 times
    compare as times, other strings as text). ``initial`` is sent until a value
    has been stored (None: the parameter is left out, i.e. everything).
    """

    field: str = "updated_at"
    param: str = "updated_since"
    initial: Any = None

    def __post_init__(self) -> None:
        for name in ("field", "param"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"IncrementalCursor {name} must be a non-empty string, got {value!r}",
                                  {name: "must be a non-empty string"})
        if self.initial is not None and _key(self.initial) is None:
            raise ConfigError(f"IncrementalCursor initial must be a number or a string, got {self.initial!r}",
                              {"initial": "must be a number or a string"})

    def value_of(self, item: Any) -> Any:
        """The cursor value an item carries (None when it has none usable)."""
        value = lookup(item, self.field)
        return value if _key(value) is not None else None

    def highest(self, current: Any, items: Iterable[Any]) -> Any:
        """The highest of *current* and the values the *items* carry."""
        best = current
        for item in items:
            value = self.value_of(item)
            if value is not None and (best is None or later(value, best)):
                best = value
        return best


def later(a: Any, b: Any) -> bool:
    """True when cursor value *a* sorts after *b* (numbers, ISO times, then plain text)."""
    ka, kb = _key(a), _key(b)
    if ka is None or kb is None:
        return False
    if ka[0] != kb[0]:  # mixed kinds (a number then a string): compare their text
        return str(a) > str(b)
    return bool(ka[1] > kb[1])


def _key(value: Any) -> Optional[Tuple[int, Any]]:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return (0, value)
    if isinstance(value, str) and value:
        moment = _parse_time(value)
        return (1, moment) if moment is not None else (2, value)
    return None


def _parse_time(text: str) -> Optional[datetime]:
    """An aware datetime from an ISO 8601 time (naive ones taken as UTC), or None."""
    candidate = text.strip()
    if len(candidate) < 10 or not candidate[:4].isdigit():
        return None
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


__all__ = ["IncrementalCursor", "later"]
