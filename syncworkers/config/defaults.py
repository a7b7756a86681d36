"""The defaults of every setting, as named constants (each with what it means)."""

#: Seconds to wait for a TCP (and TLS) connection.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Seconds to wait for the server between bytes of the response.
DEFAULT_READ_TIMEOUT = 30.0
#: Connections kept per host; raised to the number of threads that share a client.
DEFAULT_MAX_CONNECTIONS = 10
#: Seconds a pooled connection may sit idle before it is closed instead of reused.
DEFAULT_KEEPALIVE_EXPIRY = 30.0
#: Largest response body read, in bytes (10 MiB); larger bodies raise ResponseTooLarge.
DEFAULT_MAX_RESPONSE_SIZE = 10 * 1024 * 1024
#: Redirects a poller follows before giving up.
DEFAULT_MAX_REDIRECTS = 5
#: Longest an attempt may take, connect to last byte, in seconds (raised to connect + read
#: timeout when those add up to more and no deadline is given): no receiver holds a thread longer.
DEFAULT_DEADLINE = 60.0
#: The HTTP library under HTTPClient: "requests", or "curl" (``pip install 'syncworkers[curl]'``).
DEFAULT_TRANSPORT = "requests"
TRANSPORTS = ("requests", "curl")
#: Retries after the first attempt.
DEFAULT_MAX_RETRIES = 3
#: Seconds before the first retry.
DEFAULT_RETRY_DELAY = 1.0
#: Factor by which each further retry wait grows.
DEFAULT_RETRY_BACKOFF = 2.0
#: Longest wait between two retries, in seconds.
DEFAULT_MAX_DELAY = 60.0
#: Statuses that are retried: timeouts, throttling and transient server errors.
#: Longest ``Retry-After`` honoured, in seconds; a longer one is cut to this.
DEFAULT_RETRY_AFTER_MAX = 60.0
#: Consecutive failures that open a host's circuit.
DEFAULT_FAILURE_THRESHOLD = 5
#: Seconds an open circuit refuses calls before it lets one probe through.
DEFAULT_BREAKER_TIMEOUT = 60.0
#: The header that carries ``api_key`` when ``auth_type`` is ``api_key``.
DEFAULT_API_KEY_HEADER = "X-API-Key"
#: Seconds between two polls.
DEFAULT_POLL_INTERVAL = 60.0
DEFAULT_POLL_METHOD = "GET"
#: Read timeout of each webhook attempt, in seconds.
DEFAULT_WEBHOOK_TIMEOUT = 30.0
#: Threads of a webhook worker's pool (broadcast fan-out, outbox delivery).
DEFAULT_WEBHOOK_WORKERS = 32
#: Outbox schedule in the spirit of Standard Webhooks: at once, then after each delay
#: (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: about 28 hours in all).
DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
#: Seconds an outbox endpoint may only fail before it is disabled (5 days, as Svix).
DEFAULT_DISABLE_AFTER = 5 * 86400.0
#: Largest webhook body (its JSON), in bytes (1 MiB): a larger one is refused before it is sent or stored.
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024

# Upper bounds of numeric settings: larger values pass a type check but break later (an
# OverflowError in a wait, a pool of millions of threads), so the config classes refuse them.
#: Longest timeout, deadline or retry wait, in seconds (one day).
MAX_SECONDS = 86400.0
#: Longest poll interval or outbox retry delay, in seconds (one week).
MAX_INTERVAL = 7 * 86400.0
#: Longest ``disable_after``, in seconds (one year).
MAX_DISABLE_AFTER = 365 * 86400.0
#: Most threads, connections or in-flight requests a setting may ask for.
MAX_THREADS = 1024
#: Most attempts of one request, the first included (and most outbox retry delays).
MAX_ATTEMPTS = 100
#: Largest growth factor between two retry waits.
MAX_BACKOFF = 10.0
#: Most redirects followed.
MAX_REDIRECTS_LIMIT = 100
#: Most consecutive failures before a circuit opens.
MAX_FAILURE_THRESHOLD = 10_000
#: Largest response or payload size limit, in bytes (1 GiB).
MAX_BYTES = 1024 ** 3
#: Largest count, offset or page number an argument may give (what a database's bigint holds).
MAX_COUNT = 2 ** 63 - 1
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
AUTH_TYPES = ("none", "bearer", "api_key", "basic")

__all__ = [
    "AUTH_TYPES",
    "DEFAULT_API_KEY_HEADER",
    "DEFAULT_BREAKER_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_DEADLINE",
    "DEFAULT_DISABLE_AFTER",
    "DEFAULT_FAILURE_THRESHOLD",
    "DEFAULT_KEEPALIVE_EXPIRY",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_DELAY",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_MAX_REDIRECTS",
    "DEFAULT_MAX_RESPONSE_SIZE",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_POLL_METHOD",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_RETRY_AFTER_MAX",
    "DEFAULT_RETRY_BACKOFF",
    "DEFAULT_RETRY_DELAY",
    "DEFAULT_RETRY_SCHEDULE",
    "DEFAULT_TRANSPORT",
    "DEFAULT_WEBHOOK_TIMEOUT",
    "DEFAULT_WEBHOOK_WORKERS",
    "HTTP_METHODS",
    "MAX_ATTEMPTS",
    "MAX_BACKOFF",
    "MAX_BYTES",
    "MAX_COUNT",
    "MAX_DISABLE_AFTER",
    "MAX_FAILURE_THRESHOLD",
    "MAX_INTERVAL",
    "MAX_REDIRECTS_LIMIT",
    "MAX_SECONDS",
    "MAX_THREADS",
    "TRANSPORTS",
]
