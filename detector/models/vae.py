"""Variational autoencoder over windows.

Gaussian latent ``q(z|x) = N(mu, diag(exp(logvar)))``, sampled with the reparameterisation trick
``z = mu + exp(logvar / 2) * eps`` at fit time. Loss: mean squared reconstruction error per cell
plus ``beta`` times the KL divergence to ``N(0, I)``, summed over latent dimensions, averaged over
the batch and divided by the number of cells per window (so ``beta`` weighs the KL against a
per-cell error). Scoring uses the posterior mean by default; with ``score_samples = n > 0`` the
cell errors are averaged over ``n`` latent samples drawn from a seeded generator.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from .base import NetworkConfig, ReconstructionModel, mlp

__all__ = ["VAEConfig", "VariationalAutoEncoder", "VariationalConfig"]


class VariationalConfig(NetworkConfig):
    """Options of every variational kind (the vae and the cvae)."""

    beta: float = Field(1.0, ge=0, description="vae/cvae: weight of the KL term.")
    score_samples: int = Field(
        0,
        ge=0,
        le=256,
        description="vae/cvae: 0 scores with the posterior mean; n > 0 averages n latent samples.",
    )


class VAEConfig(VariationalConfig):
    """The variational autoencoder's options."""

    kind: Literal["vae"] = "vae"


class VariationalAutoEncoder(ReconstructionModel):
    """VAE; :class:`~detector.models.cvae.ConditionalVAE` adds a condition to both halves."""

    kind = "vae"
    config_class: ClassVar[type[NetworkConfig]] = VAEConfig
    config: VariationalConfig

    def __init__(
        self, config: VariationalConfig, window: int, n_features: int, n_conditions: int = 0
    ) -> None:
        super().__init__(config, window, n_features, n_conditions)
        hidden = list(config.hidden_dims)
        extra = n_conditions if self.conditional else 0
        self.encoder = mlp([self.n_inputs + extra, *hidden], config.dropout, final_activation=True)
        self.to_mu = nn.Linear(hidden[-1], config.latent_dim)
        self.to_logvar = nn.Linear(hidden[-1], config.latent_dim)
        self.decoder = mlp(
            [config.latent_dim + extra, *reversed(hidden), self.n_inputs], config.dropout
        )

    def encode(
        self, x: torch.Tensor, cond: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each (B, L)."""
        h = self.encoder(self.flatten(x, cond))  # (B, H)
        return self.to_mu(h), self.to_logvar(h).clamp(-12.0, 12.0)

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """(B, L) codes (with (B, C) conditions) to (B, W, F) windows."""
        if self.conditional and cond is not None:
            z = torch.cat([z, cond], dim=1)  # (B, L + C)
        return self.unflatten(self.decoder(z))  # (B, W, F)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        mu, _ = self.encode(x, cond)
        return self.decode(mu, cond)

    def loss(
        self, x_in: torch.Tensor, target: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        mu, logvar = self.encode(x_in, cond)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # reparameterisation
        recon = self.decode(z, cond)
        mse = torch.mean((recon - target) ** 2)
        kl = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=1).mean() / self.n_inputs
        total = mse + self.config.beta * kl
        return total, {"recon": float(mse.detach()), "kl": float(kl.detach())}

    def sample_reconstructions(
        self, x: torch.Tensor, cond: torch.Tensor | None, n_samples: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Reconstructions under ``n_samples`` latent draws, shape (S, B, W, F)."""
        mu, logvar = self.encode(x, cond)
        std = torch.exp(0.5 * logvar)
        draws = []
        for _ in range(n_samples):
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            draws.append(self.decode(mu + std * eps, cond))
        return torch.stack(draws)  # (S, B, W, F)

    @property
    def samples_in_scoring(self) -> bool:
        return self.config.score_samples > 0

    def scoring_errors(
        self, x: torch.Tensor, cond: torch.Tensor | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """With ``score_samples = n > 0``: cell errors and reconstructions averaged over ``n``
        latent draws; else the posterior mean's."""
        samples = self.config.score_samples
        if samples == 0:
            return super().scoring_errors(x, cond, generator)
        recon = self.sample_reconstructions(x, cond, samples, generator)  # (S, B, W, F)
        return ((recon - x) ** 2).mean(dim=0), recon.mean(dim=0)
