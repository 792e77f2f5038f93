"""Plain windowed autoencoder: an MLP encoder to a latent code and an MLP decoder back."""

from __future__ import annotations

import torch

from ..config import DetectorConfig
from .base import ReconstructionModel, mlp

__all__ = ["AutoEncoder"]


class AutoEncoder(ReconstructionModel):
    """Deterministic autoencoder trained with the mean squared reconstruction error."""

    kind = "ae"

    def __init__(
        self, config: DetectorConfig, window: int, n_features: int, n_conditions: int = 0
    ) -> None:
        super().__init__(config, window, n_features, n_conditions)
        hidden = list(config.hidden_dims)
        self.encoder = mlp([self.n_inputs, *hidden, config.latent_dim], config.dropout)
        self.decoder = mlp([config.latent_dim, *reversed(hidden), self.n_inputs], config.dropout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        z = self.encoder(self.flatten(x))  # (B, L)
        return self.unflatten(self.decoder(z))  # (B, W, F)
