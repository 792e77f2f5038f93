"""Compatibility alias: the stores live in :mod:`service.storage`; import them from there."""

from service.storage import *  # noqa: F403
from service.storage import __all__ as __all__
