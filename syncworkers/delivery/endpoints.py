"""Where a webhook goes: a path, an absolute URL, or a name from ``WebhookConfig.endpoints``."""

from __future__ import annotations

from typing import Mapping, Optional

from ..exceptions import ConfigError
from ..http.urls import is_absolute, join_url


class EndpointResolver:
    """Turns an endpoint as callers give it into the URL it is sent to (one rule: :func:`join_url`).

    A path (``/hooks/x``) or scheme-relative URL (``//host/x``) joins ``base_url``; an
    absolute URL is itself; anything else must be a configured name. Results are
    cached: endpoints repeat.
    """

    def __init__(self, base_url: Optional[str], endpoints: Mapping[str, str]) -> None:
        self.base_url = base_url
        self.endpoints = endpoints
        self._cache: dict[str, str] = {}

    def url_for(self, endpoint: str) -> str:
        """The URL of *endpoint*; ConfigError for an unknown name or an invalid URL."""
        url = self._cache.get(endpoint) if isinstance(endpoint, str) else None
        if url is None:
            url = self._resolve(endpoint)
            if len(self._cache) < 1024:
                self._cache[endpoint] = url
        return url

    def _resolve(self, endpoint: str) -> str:
        if not isinstance(endpoint, str) or not endpoint:
            raise ConfigError(f"endpoint must be a path, a URL or an endpoint name, got {endpoint!r}")
        target = endpoint
        if not endpoint.startswith("/") and not is_absolute(endpoint):
            named = self.endpoints.get(endpoint)
            if named is None:
                known = ", ".join(sorted(self.endpoints)) or "none configured"
                raise ConfigError(f"unknown webhook endpoint {endpoint!r} (known names: {known}); "
                                  "give a name from WebhookConfig.endpoints, a path starting with '/' "
                                  "or an absolute URL")
            target = named
        return join_url(self.base_url, target, what="webhook URL")


__all__ = ["EndpointResolver"]
