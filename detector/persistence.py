"""Save and load detectors: ``config.json``, ``model.safetensors`` and ``state.json``.

Nothing is ever unpickled: the network is rebuilt from ``config.json`` and the state, then its
tensors are read from safetensors. ``state.json`` is written last and records the SHA-256 of the
weights file; a directory is written under a temporary name and renamed into place, so a crash
mid-save never leaves a directory that loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from .config import DetectorConfig
from .detector import Detector
from .errors import PersistenceError
from .models import model_class
from .preprocessing import Preprocessor
from .training import select_device

__all__ = ["FORMAT_VERSION", "fsync_path", "load_detector", "save_detector"]

FORMAT_VERSION = 1
_CONFIG, _WEIGHTS, _STATE = "config.json", "model.safetensors", "state.json"


def _versions() -> dict[str, str]:
    out = {"torch": torch.__version__, "numpy": np.__version__}
    for name in ("reconad", "pandas"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, allow_nan=True)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_path(path: Path) -> None:
    """Flush a file or a directory entry to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_detector(detector: Detector, path: str | Path) -> None:
    """Write a fitted detector to directory ``path``, replacing any model already there.

    Raises
    ------
    NotFittedError
        The detector is not fitted.
    PersistenceError
        The directory could not be written.
    """
    detector._check_fitted()
    target = Path(path)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    try:
        tmp.mkdir(parents=True)
        _write_json(tmp / _CONFIG, detector.config.model_dump(mode="json"))
        tensors = {
            k: v.detach().cpu().contiguous() for k, v in detector.network_.state_dict().items()
        }
        save_file(tensors, str(tmp / _WEIGHTS))
        fsync_path(tmp / _WEIGHTS)
        state = {
            "format_version": FORMAT_VERSION,
            "kind": detector.config.kind,
            "window": detector.window_,
            "n_conditions": detector.network_.n_conditions,
            "preprocessor": detector.preprocessor_.state_dict(),
            "threshold": detector.threshold_,
            "calibration": detector.calibration_,
            "error_scale": detector.error_scale_.tolist(),
            "residual_std": detector.residual_std_.tolist(),
            "window_weight": detector.window_weight_,
            "feature_weight": detector.feature_weight_.tolist(),
            "known_values": [
                [float(v) for v in row if np.isfinite(v)] for row in detector.known_values_
            ],
            "validation_score": detector.validation_score_,
            "holdout_scores": detector.holdout_scores_.tolist(),
            "history": detector.history_,
            "versions": _versions(),
            "files": {_WEIGHTS: _sha256(tmp / _WEIGHTS)},
        }
        _write_json(tmp / _STATE, state)
        fsync_path(tmp)
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex}"
            target.rename(old)
        tmp.rename(target)
        fsync_path(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PersistenceError(f"could not save the model to {target}: {exc}") from exc


def load_detector(path: str | Path, device: str | None = None) -> Detector:
    """Load a detector saved by :func:`save_detector`.

    Parameters
    ----------
    path : str or Path
    device : str, optional
        Where to put the network ("cpu", "cuda", "auto"); default "auto": CUDA when
        available, else CPU, whatever device the model was trained on.

    Raises
    ------
    PersistenceError
        The directory is missing, incomplete, corrupt or of an unknown format version.
    """
    root = Path(path)
    try:
        state = json.loads((root / _STATE).read_text(encoding="utf-8"))
        config = DetectorConfig.model_validate_json((root / _CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PersistenceError(
            f"{root} is not a complete saved model (missing {exc.filename})"
        ) from exc
    except (OSError, ValueError, ValidationError) as exc:
        raise PersistenceError(f"{root} holds an unreadable model: {exc}") from exc
    if state.get("format_version") != FORMAT_VERSION:
        raise PersistenceError(
            f"{root} has model format {state.get('format_version')!r}; this version of ReconAD "
            f"reads format {FORMAT_VERSION}"
        )
    weights = root / _WEIGHTS
    if not weights.exists() or _sha256(weights) != state["files"][_WEIGHTS]:
        raise PersistenceError(f"{root}/{_WEIGHTS} is missing or does not match its checksum")
    try:
        pre = Preprocessor.from_state_dict(config, state["preprocessor"])
        network = model_class(config.kind)(
            config, int(state["window"]), len(pre.feature_names_), int(state["n_conditions"])
        )
        network.load_state_dict(load_file(str(weights)), strict=True)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise PersistenceError(f"{root} holds weights that do not fit its config: {exc}") from exc
    target = select_device(device or "auto")
    network.to(target).eval()
    det = Detector(config)
    det.preprocessor_ = pre
    det.network_ = network
    det.window_ = int(state["window"])
    det.device_ = str(target)
    det.feature_names_in_ = list(pre.feature_names_)
    det.n_features_in_ = len(pre.feature_names_)
    det.threshold_ = float(state["threshold"])
    det.calibration_ = dict(state["calibration"])
    det.error_scale_ = np.asarray(state["error_scale"], dtype=np.float64)
    det.residual_std_ = np.asarray(state["residual_std"], dtype=np.float64)
    det.window_weight_ = float(state.get("window_weight", 0.0))  # saved before the option: 0
    # saved before feature weights: every feature counts fully
    det.feature_weight_ = np.asarray(
        state.get("feature_weight", np.ones(det.n_features_in_)), dtype=np.float64
    )
    # saved before the new-value rule: no value is new
    det.known_values_ = np.full((det.n_features_in_, 2), np.nan)
    for j, seen in enumerate(state.get("known_values", [])):
        det.known_values_[j, : len(seen)] = seen
    det.validation_score_ = float(state["validation_score"])
    # saved before live detection: no held-out causal scores, a monitor asks for a refit
    det.holdout_scores_ = np.asarray(state.get("holdout_scores", []), dtype=np.float64)
    det.history_ = list(state["history"])
    return det
