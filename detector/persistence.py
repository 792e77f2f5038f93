"""Save and load detectors: ``config.json``, ``model.safetensors`` and ``state.json``.

Nothing is ever unpickled: the network is rebuilt from ``config.json`` and the state, then its
tensors are read from safetensors. ``state.json`` is written last and records the SHA-256 of the
weights file; a directory is written under a temporary name and renamed into place, so a crash
mid-save never leaves a directory that loads.

``state.json`` is one typed model, :class:`SavedState`, written and read here only. Its
``format_version`` is read: a newer format than :data:`FORMAT_VERSION` is refused, an older one
is upgraded step by step (:data:`_UPGRADES`, each step saying what the older files lacked), and
a missing key or a wrong type is a :class:`~detector.errors.PersistenceError`. Nothing falls back
silently: a new piece of state is a new field of :class:`LearnedState` (the detector attribute
of the same name with a trailing underscore, captured and restored by name), a new format
version and an upgrade step for the files saved before it.

Format history: 1, the first; 2, the condition encoder's state moved from the preprocessor's
keys ``conditions``/``period`` to the preprocessor's ``conditions`` object, and every key is
required (format-1 files saved before ``window_weight``, ``feature_weight`` and
``holdout_scores`` existed are upgraded to what they were scored with: 0, all ones, and no
held-out causal scores, for which a monitor asks for a refit).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
)
from safetensors.torch import load_file, save_file

from .config import stored_config
from .detector import Detector
from .errors import PersistenceError
from .models import REGISTRY, model_class
from .preprocessing import Preprocessor, PreprocessorState
from .training import select_device

__all__ = [
    "FORMAT_VERSION",
    "LearnedState",
    "SavedState",
    "fsync_path",
    "load_detector",
    "save_detector",
]

#: The format of ``state.json`` this code writes (and the newest it reads).
FORMAT_VERSION = 2
#: The newest ``config.json`` format this code reads (the flat config shape).
CONFIG_FORMAT_VERSION = 1
_CONFIG, _WEIGHTS, _STATE = "config.json", "model.safetensors", "state.json"


def _as_vector(value: Any) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError("expected a list of numbers")
    return array


#: A 1-d float64 array, saved as a JSON list.
Vector = Annotated[np.ndarray, PlainValidator(_as_vector), PlainSerializer(lambda a: a.tolist())]


def _as_value_sets(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    out = np.full((len(value), 2), np.nan)
    for j, seen in enumerate(value):
        out[j, : len(seen)] = np.asarray(seen, dtype=np.float64)
    return out


def _value_set_lists(array: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row if np.isfinite(v)] for row in array]


#: A (F, 2) float64 array of up to two values per feature, NaN-padded; saved as a JSON list of
#: lists without the padding.
ValueSets = Annotated[np.ndarray, PlainValidator(_as_value_sets), PlainSerializer(_value_set_lists)]


class LearnedState(BaseModel):
    """What :meth:`Detector.fit <detector.detector.Detector.fit>` learns besides the network
    weights and the preprocessor.

    Each field is the detector's attribute of the same name with a trailing underscore
    (``threshold`` is ``threshold_``): :meth:`of` reads them all and :meth:`restore` sets them
    all, so learned state added to the detector is one field here (with a format version and
    an upgrade step for older files).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    window: int
    threshold: float
    calibration: dict[str, Any]
    error_scale: Vector
    residual_std: Vector
    window_weight: float
    feature_weight: Vector
    # files saved before the new-value rule have none: no value is new
    known_values: ValueSets = Field(default_factory=lambda: np.empty((0, 2)))
    validation_score: float
    holdout_scores: Vector
    history: list[dict[str, Any]]

    @classmethod
    def of(cls, detector: Detector) -> dict[str, Any]:
        """The learned fields of a fitted detector, by name."""
        return {name: getattr(detector, f"{name}_") for name in LearnedState.model_fields}

    def restore(self, detector: Detector) -> None:
        """Set every learned field on ``detector``."""
        for name in LearnedState.model_fields:
            setattr(detector, f"{name}_", getattr(self, name))


class SavedState(LearnedState):
    """``state.json``: the learned state plus what rebuilding the network and checking the
    files needs."""

    format_version: Literal[2]
    kind: str
    n_conditions: int
    preprocessor: PreprocessorState
    versions: dict[str, str]
    files: dict[str, str]


def _upgrade_1_to_2(state: dict[str, Any]) -> dict[str, Any]:
    """Format 1 to 2: the condition encoder's state becomes one object of the preprocessor;
    files saved before ``window_weight`` / ``feature_weight`` / ``holdout_scores`` get what
    they were scored with."""
    pre = state["preprocessor"]
    conditions, period = pre.pop("conditions"), pre.pop("period")
    pre["conditions"] = (
        {
            "conditions": conditions,
            "index_kind": pre["index_kind"],
            "step": pre["step"],
            "key_levels": pre["key_levels"],
            "period": period,
        }
        if conditions
        else None
    )
    state.setdefault("window_weight", 0.0)  # saved before the option: windows did not count
    state.setdefault("feature_weight", [1.0] * len(pre["feature_names"]))  # all counted fully
    state.setdefault("holdout_scores", [])  # saved before live detection: a monitor asks to refit
    state["format_version"] = 2
    return state


#: ``_UPGRADES[v]`` turns a format-``v`` state into format ``v + 1``.
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _upgrade_1_to_2}


def read_state(raw: Any, where: str = "state.json") -> SavedState:
    """Validate a parsed ``state.json`` of any known format, upgraded to :data:`FORMAT_VERSION`.

    Raises
    ------
    PersistenceError
        Not an object, no or an unknown format version, a missing key or a wrong type.
    """
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PersistenceError(f"{where} has no valid format_version; it is not a saved model")
    if version > FORMAT_VERSION:
        raise PersistenceError(
            f"{where} has model format {version}, newer than this version of ReconAD reads "
            f"(format {FORMAT_VERSION} and older); upgrade reconad to load it"
        )
    state = copy.deepcopy(raw)
    try:
        for step in range(version, FORMAT_VERSION):
            state = _UPGRADES[step](state)
        return SavedState.model_validate(state)
    except (KeyError, TypeError, AttributeError) as exc:
        message = f"{where} is incomplete or damaged (format {version}): {exc!r}"
        raise PersistenceError(message) from exc
    except ValidationError as exc:
        raise PersistenceError(f"{where} is incomplete or damaged: {exc}") from exc


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
        state = SavedState(
            **LearnedState.of(detector),
            format_version=FORMAT_VERSION,
            kind=detector.config.kind,
            n_conditions=detector.network_.n_conditions,
            preprocessor=detector.preprocessor_.state(),
            versions=_versions(),
            files={_WEIGHTS: _sha256(tmp / _WEIGHTS)},
        )
        _write_json(tmp / _STATE, state.model_dump(mode="json"))
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
        raw = json.loads((root / _STATE).read_text(encoding="utf-8"))
        raw_config = json.loads((root / _CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PersistenceError(
            f"{root} is not a complete saved model (missing {exc.filename})"
        ) from exc
    except (OSError, ValueError) as exc:
        raise PersistenceError(f"{root} holds an unreadable model: {exc}") from exc
    state = read_state(raw, f"{root}/{_STATE}")
    config_version = raw_config.get("format_version") if isinstance(raw_config, dict) else None
    if isinstance(config_version, int) and config_version > CONFIG_FORMAT_VERSION:
        raise PersistenceError(
            f"{root}/{_CONFIG} has config format {config_version}, newer than this version of "
            f"ReconAD reads (format {CONFIG_FORMAT_VERSION}); upgrade reconad to load it"
        )
    try:
        config = stored_config(raw_config)
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        raise PersistenceError(f"{root}/{_CONFIG} is not a valid config: {exc}") from exc
    if state.kind != config.kind or state.kind not in REGISTRY:
        raise PersistenceError(
            f"{root}: state.json is of kind {state.kind!r} but config.json of {config.kind!r}"
        )
    weights = root / _WEIGHTS
    if not weights.exists() or _sha256(weights) != state.files.get(_WEIGHTS):
        raise PersistenceError(f"{root}/{_WEIGHTS} is missing or does not match its checksum")
    try:
        pre = Preprocessor.from_state(config, state.preprocessor)
    except (KeyError, TypeError, ValueError) as exc:
        raise PersistenceError(f"{root}/{_STATE} is incomplete or damaged: {exc!r}") from exc
    try:
        network = model_class(config.kind)(
            config.network, state.window, len(pre.feature_names_), state.n_conditions
        )
        network.load_state_dict(load_file(str(weights)), strict=True)
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise PersistenceError(f"{root} holds weights that do not fit its config: {exc}") from exc
    target = select_device(device or "auto")
    network.to(target).eval()
    det = Detector(config)
    state.restore(det)
    det.preprocessor_ = pre
    det.network_ = network
    det.device_ = str(target)
    det.feature_names_in_ = list(pre.feature_names_)
    det.n_features_in_ = len(pre.feature_names_)
    return det
