"""Model kinds, one file each (the model and its config), and the registry of kinds."""

from __future__ import annotations

from ..errors import ConfigError
from .aae import AAEConfig, AdversarialAutoEncoder
from .ae import AEConfig, AutoEncoder
from .base import Conditions, NetworkConfig, ReconstructionModel
from .cvae import ConditionalVAE, CVAEConfig
from .ssaae import SemiSupervisedAAE, SSAAEConfig
from .vae import VAEConfig, VariationalAutoEncoder

__all__ = [
    "REGISTRY",
    "AAEConfig",
    "AEConfig",
    "AdversarialAutoEncoder",
    "AutoEncoder",
    "CVAEConfig",
    "ConditionalVAE",
    "Conditions",
    "NetworkConfig",
    "ReconstructionModel",
    "SSAAEConfig",
    "SemiSupervisedAAE",
    "VAEConfig",
    "VariationalAutoEncoder",
    "model_class",
]

#: Every kind by name, in the order they are listed to users.
REGISTRY: dict[str, type[ReconstructionModel]] = {
    cls.kind: cls
    for cls in (
        AutoEncoder,
        VariationalAutoEncoder,
        AdversarialAutoEncoder,
        ConditionalVAE,
        SemiSupervisedAAE,
    )
}


def model_class(kind: str) -> type[ReconstructionModel]:
    """The model class registered for ``kind``."""
    try:
        return REGISTRY[kind]
    except KeyError:
        raise ConfigError(f"unknown kind {kind!r}; choose one of {sorted(REGISTRY)}") from None
