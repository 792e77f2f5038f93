"""Model kinds, one file each, and the registry that maps a kind name to its class."""

from __future__ import annotations

from ..errors import ConfigError
from .aae import AdversarialAutoEncoder
from .ae import AutoEncoder
from .base import ReconstructionModel
from .cvae import ConditionalVAE
from .vae import VariationalAutoEncoder

__all__ = [
    "REGISTRY",
    "AdversarialAutoEncoder",
    "AutoEncoder",
    "ConditionalVAE",
    "ReconstructionModel",
    "VariationalAutoEncoder",
    "model_class",
]

REGISTRY: dict[str, type[ReconstructionModel]] = {
    cls.kind: cls
    for cls in (AutoEncoder, VariationalAutoEncoder, AdversarialAutoEncoder, ConditionalVAE)
}


def model_class(kind: str) -> type[ReconstructionModel]:
    """The model class registered for ``kind``."""
    try:
        return REGISTRY[kind]
    except KeyError:
        raise ConfigError(f"unknown kind {kind!r}; choose one of {sorted(REGISTRY)}") from None
