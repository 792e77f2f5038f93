"""Compatibility alias: the object-store backends live in :mod:`service.storage.objectstore`."""

from service.storage.objectstore import *  # noqa: F403
from service.storage.objectstore import __all__ as __all__
