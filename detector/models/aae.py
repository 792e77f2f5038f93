"""Adversarial autoencoder (Makhzani et al., 2016) over windows.

The encoder is the generator: a discriminator learns to tell encoder codes from samples of the
prior ``N(0, prior_std^2 I)``, and the encoder learns to fool it. Each batch runs three phases,
each with its own Adam optimiser:

1. reconstruction: encoder + decoder minimise the mean squared reconstruction error;
2. discriminator: codes from the encoder, run in eval mode without gradients, against prior
   samples (binary cross-entropy);
3. generator: the encoder maximises the discriminator's belief that its codes are prior samples,
   weighted by ``adversarial_weight``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import torch
import torch.nn.functional as nnf
from pydantic import Field

from .ae import AutoEncoder
from .base import NetworkConfig, adam, mlp, step

if TYPE_CHECKING:
    from ..config import TrainingConfig

__all__ = ["AAEConfig", "AdversarialAutoEncoder"]


class AAEConfig(NetworkConfig):
    """The adversarial autoencoder's options: its prior and the weight of fooling the critic."""

    kind: Literal["aae"] = "aae"
    prior_std: float = Field(1.0, gt=0, description="aae: std of the Gaussian prior.")
    adversarial_weight: float = Field(1.0, ge=0, description="aae: weight of the generator loss.")


class AdversarialAutoEncoder(AutoEncoder):
    """The autoencoder of :mod:`detector.models.ae` plus a discriminator on its codes; scoring
    uses the deterministic reconstruction."""

    kind = "aae"
    config_class: ClassVar[type[NetworkConfig]] = AAEConfig
    config: AAEConfig

    def __init__(
        self, config: AAEConfig, window: int, n_features: int, n_conditions: int = 0
    ) -> None:
        super().__init__(config, window, n_features, n_conditions)
        hidden = list(config.hidden_dims)
        self.discriminator = mlp([config.latent_dim, hidden[-1], hidden[-1], 1])

    def configure_optimizers(self, training: TrainingConfig) -> dict[str, torch.optim.Optimizer]:
        autoencoder = [*self.encoder.parameters(), *self.decoder.parameters()]
        return {
            "reconstruction": adam(autoencoder, training),
            "discriminator": adam(self.discriminator.parameters(), training),
            "generator": adam(self.encoder.parameters(), training),
        }

    def training_step(
        self,
        x_in: torch.Tensor,
        target: torch.Tensor,
        cond: torch.Tensor | None,
        optimizers: dict[str, torch.optim.Optimizer],
        labels: torch.Tensor | None = None,
    ) -> dict[str, float]:
        # 1. reconstruction phase
        recon_loss, _ = self.loss(x_in, target, cond)
        step(optimizers["reconstruction"], recon_loss)

        # 2. discriminator phase: encoder in eval mode, no gradient through it
        self.encoder.eval()
        with torch.no_grad():
            fake = self.encoder(self.flatten(x_in))  # (B, L)
        self.encoder.train()
        real = torch.randn_like(fake) * self.config.prior_std  # (B, L)
        logits_real = self.discriminator(real)  # (B, 1)
        logits_fake = self.discriminator(fake)  # (B, 1)
        disc_loss = nnf.binary_cross_entropy_with_logits(
            logits_real, torch.ones_like(logits_real)
        ) + nnf.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
        step(optimizers["discriminator"], disc_loss)

        # 3. generator phase: the encoder tries to pass its codes off as prior samples; the
        # discriminator's gradients from this phase are cleared before its next step
        logits = self.discriminator(self.encoder(self.flatten(x_in)))  # (B, 1)
        gen_loss = self.config.adversarial_weight * nnf.binary_cross_entropy_with_logits(
            logits, torch.ones_like(logits)
        )
        step(optimizers["generator"], gen_loss)
        return {
            "loss": float(recon_loss.detach()),
            "discriminator": float(disc_loss.detach()),
            "generator": float(gen_loss.detach()),
        }
