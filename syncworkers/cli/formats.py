"""Text in and out of the outbox commands: durations, times, attempts, progress on a terminal."""

from __future__ import annotations

import re
import sys
from datetime import datetime
from typing import Any, Dict, List, Optional

import click

from ..observability.redaction import redact_text
from .app import CLIError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", re.I)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in a duration like ``90``, ``30m``, ``2h``, ``1d`` or ``1h30m``; ValueError otherwise."""
    compact = text.strip()
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != re.sub(r"\s+", "", compact):
        raise ValueError(f"{text!r} is not a duration (examples: 90, 30m, 2h, 1d, 1h30m)")
    return sum(float(number) * _UNITS[unit.lower()] for number, unit in parts)


def parse_since(text: str, now: float) -> float:
    """Epoch seconds of an ISO time (local time unless it has an offset) or of *now* minus a duration."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO time (2024-05-01T12:00:00+00:00) "
                         "nor a duration (30m, 2h, 1d)") from None


def _when(epoch: Optional[float]) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch).isoformat(sep=" ", timespec="seconds")


def _seconds(attempt: Any) -> str:
    return f"{attempt.duration:.3f}s"


def _attempt_dict(attempt: Any) -> Optional[Dict[str, Any]]:
    """An attempt for JSON output: its answer's text redacted."""
    if attempt is None:
        return None
    data: Dict[str, Any] = attempt.to_dict()
    data["body"] = redact_text(data["body"])
    return data


def _clip(text: str, width: int = 300) -> str:
    """*text* on one line, cut at *width* characters (``--json`` gives it whole)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width] + f"... ({len(text)} characters)"


class _Progress:
    """A progress bar on stderr when it is a terminal; silent when piped or redirected."""

    def __init__(self, length: int, label: str) -> None:
        self._bar: Any = None
        self._shown = 0
        if length > 0 and sys.stderr.isatty():
            self._bar = click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True)
            self._bar.__enter__()

    def show(self, done: int) -> None:
        if self._bar is not None and done > self._shown:
            self._bar.update(done - self._shown)
            self._shown = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _read_ids(source: Optional[str]) -> List[str]:
    """Ids one per line from a file, or from stdin for ``-`` (blank lines skipped)."""
    if source is None:
        return []
    try:
        with click.open_file(source, "r", encoding="utf-8") as handle:
            return [line.strip() for line in handle if line.strip()]
    except OSError as exc:
        raise CLIError(f"--ids-from {source!r}: {exc.strerror or exc}") from None


