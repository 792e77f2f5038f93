"""What every model kind shares: its config base, MLP blocks, the reconstruction interface.

A model reconstructs windows; it knows nothing of thresholds, scaling or training schedules.
Windows are flattened to vectors of ``window * n_features`` values (plus the condition vector
for conditional kinds).

Each kind lives in one file with its config (``detector/models/ae.py`` holds ``AEConfig`` and
``AutoEncoder``, as nanoGPT keeps ``GPTConfig`` beside ``GPT``). A kind's config is a
:class:`NetworkConfig` subclass: the architecture every kind takes plus the kind's own options.
The model receives that config only; training and calibration settings stay with the detector
(:class:`~detector.config.DetectorConfig` adds them around it, in one flat shape), except that a
kind's config may name its own defaults for the training schedule (``training_defaults``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

if TYPE_CHECKING:
    from ..config import TrainingConfig

__all__ = ["Conditions", "NetworkConfig", "ReconstructionModel", "adam", "mlp", "step"]


def hidden_dims_field(*default: int) -> Any:
    """The ``hidden_dims`` field with its default sizes (a kind may set its own)."""
    return Field(
        default_factory=lambda: list(default),
        json_schema_extra={
            "minItems": 1,
            "items": {"type": "integer", "minimum": 1, "maximum": 65_536},
        },
    )


class NetworkConfig(BaseModel):
    """Options of the network itself, shared by every kind; a kind's config subclasses it.

    Attributes
    ----------
    kind
        The kind's name; each subclass narrows it to its own literal.
    hidden_dims
        Sizes of the hidden layers of the encoder (the decoder mirrors them).
    latent_dim
        Size of the code.
    dropout
        Dropout after every hidden activation.
    training_defaults
        The kind's own defaults for fields of :class:`~detector.config.TrainingConfig` (its
        training schedule), where they differ from the shared ones; a field given in the
        config's ``training`` always wins.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    training_defaults: ClassVar[Mapping[str, Any]] = {}

    kind: str
    hidden_dims: list[int] = hidden_dims_field(128, 64)
    latent_dim: int = Field(16, ge=1, le=4096)
    dropout: float = Field(0.0, ge=0, lt=1)

    @field_validator("hidden_dims")
    @classmethod
    def _check_hidden(cls, v: list[int]) -> list[int]:
        if not v or any(h < 1 or h > 65_536 for h in v):
            raise ValueError("hidden_dims must be a non-empty list of sizes between 1 and 65536")
        return v

    def check_detector_options(self, key_column: str | None) -> None:
        """Refuse (``ValueError``) options of the kind that contradict the detector's.

        The default accepts everything; a kind whose options depend on the detector's (the
        cvae's ``key`` condition needs a key column) overrides it.
        """


class Conditions(Protocol):
    """The condition vectors of a conditional kind, fitted on training data.

    The preprocessor calls :meth:`fit` with what it learned of the training data and
    :meth:`encode` for every segment it cuts; the state travels with the saved model.
    """

    @property
    def n_conditions(self) -> int:
        """Length C of the condition vector."""
        ...

    def fit(self, index_kind: str, step: int, key_levels: list[str], scaled: np.ndarray) -> None:
        """Learn from training data: its index kind, step, series keys and scaled values."""
        ...

    def encode(self, stamps: np.ndarray, key: str, tz: Any) -> np.ndarray:
        """Condition vectors (T, C) of points at index numbers ``stamps`` of series ``key``."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe fitted state."""
        ...


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

    Subclasses set ``kind`` and ``config_class``, build their networks in ``__init__`` and
    implement :meth:`forward` (the deterministic reconstruction used for scoring) and
    :meth:`loss`. Kinds with several optimisers (or that learn from labels) override
    :meth:`configure_optimizers` and :meth:`training_step`; kinds that score otherwise than
    by one deterministic pass override :meth:`scoring_errors`; conditional kinds override
    :meth:`conditions`.

    Parameters
    ----------
    config : NetworkConfig
        The kind's own config (``config_class``).
    window : int
        Resolved window length W.
    n_features : int
        Number of features F.
    n_conditions : int
        Length C of the condition vector (0 for unconditional kinds).
    """

    kind: ClassVar[str]
    config_class: ClassVar[type[NetworkConfig]]
    #: Whether the kind needs a condition vector with every window.
    conditional: ClassVar[bool] = False
    #: Whether the kind learns from window labels (``training_step``'s ``labels``); the
    #: detector leaves windows holding a labelled anomaly out of the training of the others.
    learns_from_labels: ClassVar[bool] = False

    def __init__(
        self, config: NetworkConfig, window: int, n_features: int, n_conditions: int = 0
    ) -> None:
        super().__init__()
        self.config = config
        self.window = window
        self.n_features = n_features
        self.n_conditions = n_conditions
        self.n_inputs = window * n_features

    @classmethod
    def conditions(
        cls, config: NetworkConfig, state: dict[str, Any] | None = None
    ) -> Conditions | None:
        """The kind's condition encoder (restored from ``state`` when given); None for
        unconditional kinds."""
        return None

    @property
    def samples_in_scoring(self) -> bool:
        """Whether :meth:`scoring_errors` draws from ``generator`` (its numbers then depend on
        which windows share a batch); False for a deterministic pass."""
        return False

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

    def scoring_errors(
        self, x: torch.Tensor, cond: torch.Tensor | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared errors and reconstructions of a batch for scoring, both (B, W, F).

        The default is one deterministic reconstruction; ``generator`` seeds kinds that
        sample. The errors are a new tensor (the detector blends them in place).
        """
        recon: torch.Tensor = self(x, cond)  # (B, W, F)
        return (recon - x).square_(), recon

    def configure_optimizers(self, training: TrainingConfig) -> dict[str, torch.optim.Optimizer]:
        """One Adam optimiser over every parameter."""
        return {"main": adam(self.parameters(), training)}

    def training_step(
        self,
        x_in: torch.Tensor,
        target: torch.Tensor,
        cond: torch.Tensor | None,
        optimizers: dict[str, torch.optim.Optimizer],
        labels: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """One optimisation step on a batch; returns the losses to log.

        ``labels`` (B,) are the windows' labels (1 anomalous, 0 normal, -1 unknown, see
        :func:`detector.feedback.window_labels`) when the data had labels; only kinds with
        ``learns_from_labels`` read them.
        """
        loss, parts = self.loss(x_in, target, cond)
        step(optimizers["main"], loss)
        return {"loss": float(loss.detach()), **parts}


def adam(params: Iterable[nn.Parameter], training: TrainingConfig) -> torch.optim.Adam:
    """Adam with the training config's learning rate and weight decay, every kind's optimiser.

    Fused: one kernel updates every parameter per step instead of a dozen tensor operations
    per parameter, the same update (to rounding) in about half the optimiser's time on CPU.
    """
    return torch.optim.Adam(
        params, lr=training.learning_rate, weight_decay=training.weight_decay, fused=True
    )


def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """Back-propagate ``loss`` and take one step of ``optimizer`` (gradients cleared first)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
