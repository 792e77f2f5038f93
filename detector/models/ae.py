"""Plain windowed autoencoder: an MLP encoder to a latent code and an MLP decoder back."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from .base import NetworkConfig, ReconstructionModel, mlp

__all__ = ["AEConfig", "AutoEncoder"]


class AEConfig(NetworkConfig):
    """The autoencoder takes the shared network options only."""

    kind: Literal["ae"] = "ae"


class AutoEncoder(ReconstructionModel):
    """Deterministic autoencoder trained with the mean squared reconstruction error."""

    kind = "ae"
    config_class: ClassVar[type[NetworkConfig]] = AEConfig

    def __init__(
        self, config: NetworkConfig, window: int, n_features: int, n_conditions: int = 0
    ) -> None:
        super().__init__(config, window, n_features, n_conditions)
        hidden = list(config.hidden_dims)
        self.encoder = mlp([self.n_inputs, *hidden, config.latent_dim], config.dropout)
        self.decoder = mlp([config.latent_dim, *reversed(hidden), self.n_inputs], config.dropout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        z = self.encoder(self.flatten(x))  # (B, L)
        return self.unflatten(self.decoder(z))  # (B, W, F)
