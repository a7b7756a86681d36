"""The documented import path of :mod:`syncworkers.observability.prometheus`."""

from .observability.prometheus import *  # noqa: F401,F403
from .observability.prometheus import __all__  # noqa: F401
