"""Semi-supervised adversarial autoencoder (Makhzani et al., 2016, section 5) over windows.

The encoder maps a window to a categorical part ``y`` (a softmax over normal / anomalous) and
a continuous code ``z``; the decoder reconstructs the window from ``(y, z)``. Two
discriminators shape the codes: one tells ``z`` from samples of ``N(0, prior_std^2 I)``, the
other tells ``y`` from one-hot samples of the categorical prior ``(1 - anomaly_rate,
anomaly_rate)``. Each batch runs three phases, each with its own Adam optimiser:

1. reconstruction and labels: encoder + decoder minimise the mean squared reconstruction error
   of the windows that contain no labelled anomaly, plus ``label_weight`` times the
   cross-entropy of ``y`` on the labelled windows (class-balanced: the mean over the anomalous
   and the mean over the normal windows of the batch, each where there are any);
2. discriminators: codes from the encoder (eval mode, no gradients) against prior samples;
3. generator: the encoder makes both its ``z`` and its ``y`` pass for prior samples, weighted by
   ``adversarial_weight``.

Labels reach training as one label per window (:func:`detector.feedback.window_labels`: 1 when
the window holds a point labelled anomaly, 0 when its last point is labelled normal and none is
anomalous, -1 unknown), from the per-point ``labels`` that :meth:`Detector.fit
<detector.detector.Detector.fit>` takes. Without labels it trains as an adversarial
autoencoder whose ``y`` is an unsupervised two-way split.

Score: each cell's squared reconstruction error times ``1 + anomaly_weight * p``, with ``p``
the window's probability of "anomalous" (so the detector's error normalisation, window weight
and thresholds apply unchanged). ``p`` only counts once the model was trained on labelled
windows of both classes (the ``supervised`` buffer, saved with the weights): before that, ``y``
is a split that nothing has named, and the score is the reconstruction error alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import torch
import torch.nn.functional as nnf
from pydantic import Field
from torch import nn

from .base import NetworkConfig, ReconstructionModel, adam, mlp, step

if TYPE_CHECKING:
    from ..config import TrainingConfig

__all__ = ["SSAAEConfig", "SemiSupervisedAAE"]


class SSAAEConfig(NetworkConfig):
    """The semi-supervised AAE's options: its priors and the weights of its losses."""

    kind: Literal["ssaae"] = "ssaae"
    prior_std: float = Field(1.0, gt=0, description="aae/ssaae: std of the Gaussian prior.")
    adversarial_weight: float = Field(
        1.0, ge=0, description="aae/ssaae: weight of the generator loss."
    )
    anomaly_rate: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="ssaae: expected share of anomalous windows, the categorical prior of y.",
    )
    label_weight: float = Field(
        1.0, ge=0, description="ssaae: weight of the cross-entropy on labelled windows."
    )
    anomaly_weight: float = Field(
        3.0,
        ge=0,
        description="ssaae: a cell's error is multiplied by 1 + anomaly_weight * p(anomalous) "
        "once the model was trained on labels of both classes.",
    )


class SemiSupervisedAAE(ReconstructionModel):
    """Encoder to ``(y, z)``, decoder from them, two discriminators (module docstring)."""

    kind = "ssaae"
    config_class: ClassVar[type[NetworkConfig]] = SSAAEConfig
    learns_from_labels = True
    config: SSAAEConfig
    supervised: torch.Tensor

    def __init__(
        self, config: SSAAEConfig, window: int, n_features: int, n_conditions: int = 0
    ) -> None:
        super().__init__(config, window, n_features, n_conditions)
        hidden = list(config.hidden_dims)
        latent = config.latent_dim
        self.trunk = mlp([self.n_inputs, *hidden], config.dropout, final_activation=True)
        self.to_z = nn.Linear(hidden[-1], latent)
        self.to_y = nn.Linear(hidden[-1], 2)
        self.decoder = mlp([latent + 2, *reversed(hidden), self.n_inputs], config.dropout)
        self.critic_z = mlp([latent, hidden[-1], hidden[-1], 1])
        self.critic_y = mlp([2, hidden[-1], hidden[-1], 1])
        #: 1 once trained on labelled windows of both classes (the score then uses p).
        self.register_buffer("supervised", torch.zeros(1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of ``y`` (B, 2) and the code ``z`` (B, L) of windows (B, W, F)."""
        h = self.trunk(self.flatten(x))  # (B, H)
        return self.to_y(h), self.to_z(h)

    def _decode(self, logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = torch.softmax(logits, dim=1)  # (B, 2)
        return self.unflatten(self.decoder(torch.cat([y, z], dim=1)))  # (B, W, F)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        logits, z = self.encode(x)
        return self._decode(logits, z)

    def scoring_errors(
        self, x: torch.Tensor, cond: torch.Tensor | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, z = self.encode(x)
        recon = self._decode(logits, z)  # (B, W, F)
        err = (recon - x) ** 2
        if float(self.supervised) > 0:
            p = torch.softmax(logits, dim=1)[:, 1]  # (B,)
            err = err * (1.0 + self.config.anomaly_weight * p)[:, None, None]
        return err, recon

    def configure_optimizers(self, training: TrainingConfig) -> dict[str, torch.optim.Optimizer]:
        encoder = [*self.trunk.parameters(), *self.to_z.parameters(), *self.to_y.parameters()]
        critics = [*self.critic_z.parameters(), *self.critic_y.parameters()]
        return {
            "reconstruction": adam([*encoder, *self.decoder.parameters()], training),
            "discriminator": adam(critics, training),
            "generator": adam(encoder, training),
        }

    def _prior_y(self, like: torch.Tensor) -> torch.Tensor:
        """One-hot samples (B, 2) of the categorical prior."""
        anomalous = (
            torch.rand(like.shape[0], device=like.device) < self.config.anomaly_rate
        ).long()
        return nnf.one_hot(anomalous, 2).to(like.dtype)

    def training_step(
        self,
        x_in: torch.Tensor,
        target: torch.Tensor,
        cond: torch.Tensor | None,
        optimizers: dict[str, torch.optim.Optimizer],
        labels: torch.Tensor | None = None,
    ) -> dict[str, float]:
        cfg = self.config
        # 1. reconstruction of the windows without a labelled anomaly, and the labels
        logits, z = self.encode(x_in)
        recon = self._decode(logits, z)
        per_window = ((recon - target) ** 2).mean(dim=(1, 2))  # (B,)
        clean = torch.ones_like(per_window, dtype=torch.bool) if labels is None else labels != 1
        recon_loss = per_window[clean].mean() if bool(clean.any()) else per_window.sum() * 0.0
        label_loss = torch.zeros((), device=x_in.device)
        if labels is not None:
            ce = nnf.cross_entropy(logits, labels.clamp(min=0).long(), reduction="none")  # (B,)
            for cls in (0, 1):
                members = labels == cls
                if bool(members.any()):
                    label_loss = label_loss + ce[members].mean()
            if bool((labels == 0).any()) and bool((labels == 1).any()):
                self.supervised.fill_(1.0)
        step(optimizers["reconstruction"], recon_loss + cfg.label_weight * label_loss)

        # 2. discriminators: codes from the encoder in eval mode, no gradient through it
        self.trunk.eval()
        with torch.no_grad():
            fake_y, fake_z = self.encode(x_in)
        self.trunk.train()
        fake_y = torch.softmax(fake_y, dim=1)
        real_z = torch.randn_like(fake_z) * cfg.prior_std
        real_y = self._prior_y(fake_y)
        disc_loss = (
            _bce(self.critic_z(real_z), 1.0)
            + _bce(self.critic_z(fake_z), 0.0)
            + _bce(self.critic_y(real_y), 1.0)
            + _bce(self.critic_y(fake_y), 0.0)
        )
        step(optimizers["discriminator"], disc_loss)

        # 3. generator: the encoder passes its codes off as prior samples
        gen_y, gen_z = self.encode(x_in)
        gen_loss = cfg.adversarial_weight * (
            _bce(self.critic_z(gen_z), 1.0) + _bce(self.critic_y(torch.softmax(gen_y, dim=1)), 1.0)
        )
        step(optimizers["generator"], gen_loss)
        return {
            "loss": float(recon_loss.detach()),
            "labels": float(label_loss.detach()),
            "discriminator": float(disc_loss.detach()),
            "generator": float(gen_loss.detach()),
        }


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return nnf.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))
