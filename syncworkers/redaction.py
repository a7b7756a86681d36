"""The documented import path of :mod:`syncworkers.observability.redaction`."""

from .observability.redaction import *  # noqa: F401,F403
from .observability.redaction import __all__  # noqa: F401
