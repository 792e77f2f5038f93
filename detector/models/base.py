"""What every model kind shares: MLP blocks, the reconstruction interface, the default step.

A model reconstructs windows; it knows nothing of thresholds or scaling. Windows are flattened
to vectors of ``window * n_features`` values (plus the condition vector for conditional kinds).
"""

from __future__ import annotations

import itertools
from typing import ClassVar

import torch
from torch import nn

from ..config import DetectorConfig, TrainingConfig

__all__ = ["ReconstructionModel", "mlp", "step"]


def mlp(sizes: list[int], dropout: float = 0.0, final_activation: bool = False) -> nn.Sequential:
    """A stack of Linear layers with GELU activations between them.

    Parameters
    ----------
    sizes : list of int
        ``[in, hidden..., out]``.
    dropout : float
        Dropout after every hidden activation.
    final_activation : bool
        Whether the last Linear is followed by an activation too.
    """
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        last = i == len(sizes) - 2
        if not last or final_activation:
            layers.append(nn.GELU())
            if dropout > 0 and not last:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class ReconstructionModel(nn.Module):
    """Base class of every model kind.

    Subclasses build their networks in ``__init__`` and implement :meth:`forward` (the
    deterministic reconstruction used for scoring) and :meth:`loss`. Kinds with several
    optimisers override :meth:`configure_optimizers` and :meth:`training_step`.

    Parameters
    ----------
    config : DetectorConfig
    window : int
        Resolved window length W.
    n_features : int
        Number of features F.
    n_conditions : int
        Length C of the condition vector (0 for unconditional kinds).
    """

    kind: ClassVar[str]
    #: Whether the kind needs a condition vector with every window.
    conditional: ClassVar[bool] = False

    def __init__(
        self, config: DetectorConfig, window: int, n_features: int, n_conditions: int = 0
    ) -> None:
        super().__init__()
        self.config = config
        self.window = window
        self.n_features = n_features
        self.n_conditions = n_conditions
        self.n_inputs = window * n_features

    # ---------------------------------------------------------------- shape helpers
    def flatten(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """(B, W, F) windows (and (B, C) conditions) to (B, W*F [+ C]) vectors."""
        flat = x.reshape(x.shape[0], self.n_inputs)  # (B, W*F)
        if self.conditional and cond is not None:
            flat = torch.cat([flat, cond], dim=1)  # (B, W*F + C)
        return flat

    def unflatten(self, flat: torch.Tensor) -> torch.Tensor:
        """(B, W*F) vectors back to (B, W, F) windows."""
        return flat.reshape(flat.shape[0], self.window, self.n_features)  # (B, W, F)

    # ---------------------------------------------------------------- interface
    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Deterministic reconstruction for scoring: (B, W, F) -> (B, W, F)."""
        raise NotImplementedError

    def loss(
        self, x_in: torch.Tensor, target: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of one batch and its named parts (floats, for the history)."""
        recon = self(x_in, cond)
        mse = torch.mean((recon - target) ** 2)
        return mse, {}

    def sample_reconstructions(
        self, x: torch.Tensor, cond: torch.Tensor | None, n_samples: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Reconstructions under ``n_samples`` latent draws, shape (S, B, W, F).

        Deterministic kinds return their single reconstruction.
        """
        recon: torch.Tensor = self(x, cond)
        return recon.unsqueeze(0)  # (1, B, W, F)

    def configure_optimizers(self, training: TrainingConfig) -> dict[str, torch.optim.Optimizer]:
        """One Adam optimiser over every parameter."""
        return {
            "main": torch.optim.Adam(
                self.parameters(), lr=training.learning_rate, weight_decay=training.weight_decay
            )
        }

    def training_step(
        self,
        x_in: torch.Tensor,
        target: torch.Tensor,
        cond: torch.Tensor | None,
        optimizers: dict[str, torch.optim.Optimizer],
    ) -> dict[str, float]:
        """One optimisation step on a batch; returns the losses to log."""
        loss, parts = self.loss(x_in, target, cond)
        step(optimizers["main"], loss)
        return {"loss": float(loss.detach()), **parts}


def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """Back-propagate ``loss`` and take one step of ``optimizer`` (gradients cleared first)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
