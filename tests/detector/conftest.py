from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

torch.set_num_threads(2)


def tiny_config(kind: str, **overrides: Any) -> dict[str, Any]:
    """A small, fast configuration of ``kind`` for tests."""
    cfg: dict[str, Any] = {
        "kind": kind,
        "window": 24,
        "hidden_dims": [64],
        "latent_dim": 8,
        "training": {"max_epochs": 25, "max_seconds": 20, "patience": 4, "seed": 0},
    }
    if kind == "cvae":
        cfg["condition_on"] = ["hour"]  # the generated data spans two days
    training = overrides.pop("training", {})
    cfg.update(overrides)
    cfg["training"] = {**cfg["training"], **training}
    return cfg


@pytest.fixture
def tiny() -> Any:
    return tiny_config
