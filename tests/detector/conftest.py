from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

torch.set_num_threads(2)

from synthetic import tiny_config  # noqa: E402


@pytest.fixture
def tiny() -> Any:
    return tiny_config
