"""Async peers for figure 2: ``httpx.AsyncClient`` and ``aiohttp`` driving N concurrent tasks.

asyncio lives here, in the benchmark only, to measure the stacks users would
otherwise pick; syncworkers itself has none. Each peer keeps one event loop and
one client for all its runs, like the threaded clients keep their pools.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from typing import Any, Dict, Optional, Tuple

PEERS = ("httpx", "aiohttp")


def available(peer: str) -> bool:
    try:
        return importlib.util.find_spec(peer) is not None
    except (ImportError, ValueError):  # ValueError: a module blocked in sys.modules
        return False


def version(peer: str) -> Optional[str]:
    if not available(peer):
        return None
    return getattr(__import__(peer), "__version__", "?")


class AsyncPeer:
    """One async client (*peer* is "httpx" or "aiohttp") posting JSON with *concurrency* tasks."""

    def __init__(self, peer: str, url: str, data: Dict[str, Any], concurrency: int,
                 timeout: Tuple[float, float] = (5.0, 30.0)) -> None:
        self.peer = peer
        self.url = url
        self.data = data
        self.concurrency = concurrency
        self.loop = asyncio.new_event_loop()
        self.client: Any = self.loop.run_until_complete(self._open(timeout))

    async def _open(self, timeout: Tuple[float, float]) -> Any:
        if self.peer == "httpx":
            import httpx

            limits = httpx.Limits(max_connections=self.concurrency,
                                  max_keepalive_connections=self.concurrency)
            return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout[1], connect=timeout[0]))
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.concurrency)
        return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(
            total=None, connect=timeout[0], sock_read=timeout[1]))

    async def _one(self) -> bool:
        if self.peer == "httpx":
            response = await self.client.post(self.url, json=self.data)
            return response.status_code < 300
        async with self.client.post(self.url, json=self.data) as response:
            await response.read()
            return response.status < 300

    async def _load(self, duration: float, max_requests: int) -> Tuple[int, int]:
        end = time.monotonic() + duration
        issued = 0
        counts = [0, 0]  # done, errors

        async def task() -> None:
            nonlocal issued
            while issued < max_requests and time.monotonic() < end:
                issued += 1
                try:
                    ok = await self._one()
                except Exception:
                    ok = False
                counts[0] += 1
                if not ok:
                    counts[1] += 1

        await asyncio.wait_for(asyncio.gather(*(task() for _ in range(self.concurrency))),
                               timeout=duration + 60)
        return counts[0], counts[1]

    def run(self, duration: float, max_requests: int) -> Dict[str, float]:
        """One timed run: requests, errors, wall seconds, process CPU seconds."""
        cpu0, t0 = time.process_time(), time.perf_counter()
        done, errors = self.loop.run_until_complete(self._load(duration, max_requests))
        return {"requests": done, "errors": errors, "wall": time.perf_counter() - t0,
                "cpu": time.process_time() - cpu0}

    def close(self) -> None:
        try:
            close = self.client.aclose() if self.peer == "httpx" else self.client.close()
            self.loop.run_until_complete(close)
            if self.peer == "aiohttp":
                self.loop.run_until_complete(asyncio.sleep(0.05))  # let aiohttp close its transports
        finally:
            self.loop.close()


__all__ = ["AsyncPeer", "PEERS", "available", "version"]
