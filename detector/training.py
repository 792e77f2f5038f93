"""The fit loop: Adam, a time-ordered validation split, early stopping, seeding, device choice,
progress callbacks, and caps on epochs and wall time."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .config import TrainingConfig
from .errors import ConfigError, TrainingCancelled, TrainingError
from .feedback import window_labels
from .models.base import ReconstructionModel
from .preprocessing import Segment
from .windows import gather_windows, window_starts

__all__ = [
    "ProgressCallback",
    "TrainingProgress",
    "WindowSet",
    "fit_model",
    "seed_everything",
    "select_device",
]

logger = logging.getLogger(__name__)

_MAX_VALIDATION_WINDOWS = 512


@dataclass(frozen=True)
class TrainingProgress:
    """What a progress callback receives after every epoch.

    Attributes
    ----------
    epoch : int
        1-based epoch just finished.
    max_epochs : int
        The configured cap.
    losses : dict of str to float
        ``train`` (mean training loss), ``val`` (validation reconstruction error) and the
        kind's named loss parts averaged over the epoch.
    elapsed_s : float
        Seconds since training started.
    """

    epoch: int
    max_epochs: int
    losses: dict[str, float]
    elapsed_s: float


#: Called after each epoch; returning ``False`` cancels training (:class:`TrainingCancelled`).
ProgressCallback = Callable[[TrainingProgress], "bool | None"]


@dataclass
class WindowSet:
    """Windows over segments concatenated end to end; no window crosses a segment boundary.

    Attributes
    ----------
    values : Tensor, shape (N, F)
    cond : Tensor, shape (N, C), or None
    starts : Tensor of int64, shape (M,)
        Start of each window in ``values``.
    window : int
    labels : Tensor of int64, shape (M,), or None
        Each window's label (:func:`detector.feedback.window_labels`) when the segments carry
        feedback labels.
    """

    values: torch.Tensor
    cond: torch.Tensor | None
    starts: torch.Tensor
    window: int
    labels: torch.Tensor | None = None

    @classmethod
    def build(
        cls,
        segments: list[Segment],
        window: int,
        stride: int,
        device: torch.device,
        max_windows: int | None = None,
        drop_anomalous: bool = False,
    ) -> WindowSet:
        """Windows of every segment at ``stride``, evenly subsampled to ``max_windows``;
        ``drop_anomalous`` leaves out the windows that hold a point labelled anomaly."""
        values, conds, starts, labels, offset = [], [], [], [], 0
        for seg in segments:
            seg_starts = window_starts(len(seg), window, stride)
            if seg.labels is not None and seg_starts.size:
                seg_labels = window_labels(seg.labels, window)[seg_starts]
                if drop_anomalous:
                    seg_starts, seg_labels = (
                        seg_starts[seg_labels != 1],
                        seg_labels[seg_labels != 1],
                    )
                labels.append(seg_labels)
            if seg_starts.size:
                values.append(seg.values)
                if seg.cond is not None:
                    conds.append(seg.cond)
                starts.append(seg_starts + offset)
                offset += len(seg)
        if not starts:
            return cls(
                torch.empty(0, 0, device=device), None, torch.empty(0, dtype=torch.int64), window
            )
        all_starts = np.concatenate(starts)
        all_labels = np.concatenate(labels) if labels else None
        if all_labels is not None and all_labels.size != all_starts.size:
            all_labels = None  # some segments without labels: none are used
        if max_windows is not None and all_starts.size > max_windows:
            pick = np.linspace(0, all_starts.size - 1, max_windows).round().astype(np.int64)
            all_starts = all_starts[pick]
            all_labels = None if all_labels is None else all_labels[pick]
        cond = torch.from_numpy(np.concatenate(conds)).to(device) if conds else None
        return cls(
            torch.from_numpy(np.concatenate(values)).to(device),
            cond,
            torch.from_numpy(all_starts).to(device),
            window,
            None
            if all_labels is None
            else torch.from_numpy(all_labels.astype(np.int64)).to(device),
        )

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def batch(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Windows (B, W, F) and conditions (B, C); a window's condition is its last point's."""
        x = gather_windows(self.values, starts, self.window)  # (B, W, F)
        cond = None if self.cond is None else self.cond[starts + self.window - 1]  # (B, C)
        return x, cond


def select_device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; ``"cuda"`` without a GPU raises ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was requested but no CUDA device is available; use 'auto'")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _corrupt(x: torch.Tensor, training: TrainingConfig, generator: torch.Generator) -> torch.Tensor:
    """Denoising input corruption: Gaussian noise and/or random masking (target stays clean)."""
    if training.noise_std > 0:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + training.noise_std * noise
    if training.mask_probability > 0:
        keep = (
            torch.rand(x.shape, generator=generator, device=x.device) >= training.mask_probability
        )
        x = x * keep
    return x


def _epoch_draw(
    order: torch.Tensor, labels: torch.Tensor | None, count: int, generator: torch.Generator
) -> torch.Tensor:
    """An epoch's windows: the first ``count`` of a random ``order``, except that every window
    labelled anomalous is in every epoch (with at least ``count // 2`` others): they are rare,
    and a kind that learns from labels (the only one that keeps them) learns anomalies from
    them. The result is shuffled again, so that batches mix both."""
    if labels is None:
        return order[:count]
    anomalous = labels[order] == 1
    n_anomalous = int(anomalous.sum())
    if n_anomalous == 0:
        return order[:count]
    others = order[~anomalous][: max(count - n_anomalous, count // 2)]
    picked = torch.cat([order[anomalous], others])
    return picked[torch.randperm(len(picked), generator=generator, device=picked.device)]


def _validation_loss(model: ReconstructionModel, val: WindowSet, batch_size: int) -> float:
    """Mean squared reconstruction error over (at most 512 evenly spaced) validation windows.

    The same windows every epoch, so epochs compare on one set; neighbouring windows overlap
    almost entirely, so 512 of them estimate the error of all about as well, at a fraction of
    the cost (it ran after every epoch over every window: a tenth of a fit's time).
    """
    starts = val.starts
    if len(starts) > _MAX_VALIDATION_WINDOWS:
        pick = torch.linspace(0, len(starts) - 1, _MAX_VALIDATION_WINDOWS).round().long()
        starts = starts[pick.to(starts.device)]
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(starts), batch_size * 4):
            x, cond = val.batch(starts[i : i + batch_size * 4])
            err = (model(x, cond) - x) ** 2  # (B, W, F)
            total += float(err.sum())
            count += err.numel()
    model.train()
    return total / max(count, 1)


def fit_model(
    model: ReconstructionModel,
    train: WindowSet,
    val: WindowSet,
    training: TrainingConfig,
    progress: ProgressCallback | None = None,
) -> tuple[list[dict[str, float]], float]:
    """Train ``model`` in place and restore the weights of its best validation epoch.

    Returns
    -------
    history : list of dict
        One entry per epoch: ``epoch``, ``train``, ``val``, loss parts, ``seconds``.
    best_val : float
        The best validation reconstruction error.

    Raises
    ------
    TrainingError
        The loss became non-finite.
    TrainingCancelled
        The progress callback returned ``False``.
    """
    device = train.values.device
    generator = torch.Generator(device=device).manual_seed(training.seed)
    optimizers = model.configure_optimizers(training)
    history: list[dict[str, float]] = []
    best_val, best_state, bad_epochs = math.inf, None, 0
    started = time.monotonic()
    out_of_time = False
    model.train()
    for epoch in range(1, training.max_epochs + 1):
        order = torch.randperm(len(train), generator=generator, device=device)
        if training.epoch_windows is not None and len(order) > training.epoch_windows:
            order = _epoch_draw(order, train.labels, training.epoch_windows, generator)
        sums: dict[str, float] = {}
        n_batches = 0
        for i in range(0, len(order), training.batch_size):
            picked = order[i : i + training.batch_size]
            x, cond = train.batch(train.starts[picked])
            x_in = _corrupt(x, training, generator) if training.denoising else x
            labels = None if train.labels is None else train.labels[picked]
            parts = model.training_step(x_in, x, cond, optimizers, labels=labels)
            if not math.isfinite(parts["loss"]):
                raise TrainingError(
                    f"training diverged at epoch {epoch} (loss {parts['loss']}); lower the "
                    "learning rate or check the data for extreme values"
                )
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value
            n_batches += 1
            if (
                training.max_seconds is not None
                and time.monotonic() - started > training.max_seconds
            ):
                out_of_time = True
                break
        val_loss = _validation_loss(model, val, training.batch_size)
        if not math.isfinite(val_loss):
            raise TrainingError(
                f"the validation error is not finite at epoch {epoch}; lower the learning rate "
                "or check the data for extreme values"
            )
        losses = {name: total / max(n_batches, 1) for name, total in sums.items()}
        losses["train"] = losses.pop("loss", math.nan)
        losses["val"] = val_loss
        elapsed = time.monotonic() - started
        history.append({"epoch": float(epoch), **losses, "seconds": elapsed})
        logger.debug("epoch %d: %s", epoch, losses)
        if (
            progress is not None
            and progress(TrainingProgress(epoch, training.max_epochs, dict(losses), elapsed))
            is False
        ):
            raise TrainingCancelled(f"training was cancelled after epoch {epoch}")
        if val_loss < best_val * (1 - training.min_delta):
            best_val, bad_epochs = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        if bad_epochs >= training.patience or out_of_time:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history, best_val
