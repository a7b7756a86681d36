"""HTTP: the client, its transports, and the rules of one request (outcome, retry, breaker, limits, redirects, the SSRF guard, URLs)."""
