"""The saved state: typed, one format version that is read, old formats upgraded, damage refused.

``fixtures/v1_*`` are tiny models saved by the code of format 1 (``fixtures/make_v1.py``),
with the scores and reconstructions they gave then (``expected_scores.csv``). They must keep
loading and scoring the same; never regenerate them with newer code.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from detector import errors, load_detector
from detector.persistence import FORMAT_VERSION, LearnedState

FIXTURES = Path(__file__).parent / "fixtures"
V1 = ["v1_ae", "v1_vae", "v1_aae", "v1_cvae"]


def fixture_input(name: str) -> pd.DataFrame:
    frame = pd.read_csv(FIXTURES / "v1_input.csv", index_col="timestamp", parse_dates=True)
    if name == "v1_cvae":  # conditioned on the host key and the calendar
        return frame
    return frame[frame["host"] == "a"].drop(columns="host")


@pytest.mark.parametrize("name", V1)
def test_a_model_saved_in_format_1_loads_and_scores_as_it_did(name: str, tmp_path: Path) -> None:
    assert json.loads((FIXTURES / name / "state.json").read_text())["format_version"] == 1
    det = load_detector(FIXTURES / name, device="cpu")
    data = fixture_input(name)
    expected = pd.read_csv(FIXTURES / name / "expected_scores.csv")
    details = det.score_details(data, reconstruct=True)
    assert details.expected is not None
    # The networks compute in float32: agreement to a few float32 epsilons (1.2e-7) across CPUs
    # whose vector units round differently; a changed model or score rule moves far more.
    np.testing.assert_allclose(details.scores.to_numpy(), expected["score"], rtol=1e-5)
    np.testing.assert_allclose(  # values near 0 (about 0.1 in scale): an absolute floor too
        details.expected.to_numpy(),
        expected.filter(like="expected.").to_numpy(),
        rtol=1e-5,
        atol=1e-6,
    )
    # saved again, it is written in the current format and scores the same
    det.save(tmp_path / "again")
    state = json.loads((tmp_path / "again" / "state.json").read_text())
    assert state["format_version"] == FORMAT_VERSION == 2
    again = load_detector(tmp_path / "again", device="cpu")
    np.testing.assert_array_equal(again.anomaly_score(data), details.scores)


def edited(tmp_path: Path, edit: Callable[[dict[str, Any]], None], name: str = "v1_ae") -> Path:
    """A copy of a fixture resaved in the current format, with ``state.json`` edited."""
    target = tmp_path / "edited"
    load_detector(FIXTURES / name, device="cpu").save(target)
    state = json.loads((target / "state.json").read_text())
    edit(state)
    (target / "state.json").write_text(json.dumps(state))
    return target


def test_a_newer_format_is_refused(tmp_path: Path) -> None:
    path = edited(tmp_path, lambda s: s.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(errors.PersistenceError, match="newer than this version of ReconAD reads"):
        load_detector(path)
    config = json.loads((path / "config.json").read_text())
    path = edited(tmp_path / "c", lambda s: None)
    (path / "config.json").write_text(json.dumps({**config, "format_version": 2}))
    with pytest.raises(errors.PersistenceError, match="config format 2"):
        load_detector(path)


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.pop("threshold"),
        lambda s: s.pop("window_weight"),  # a key added later never falls back silently
        lambda s: s.pop("format_version"),
        lambda s: s.update(window="wide"),
        lambda s: s.update(error_scale={"a": 1}),
        lambda s: s.update(surplus=1),
        lambda s: s["preprocessor"].pop("center"),
        lambda s: s["preprocessor"].update(scale=[1.0]),
        lambda s: s["preprocessor"].update(index_kind="strings"),
        lambda s: s.update(kind="vae"),
    ],
    ids=[
        "no-threshold",
        "no-window-weight",
        "no-version",
        "window-type",
        "vector-type",
        "unknown-key",
        "no-center",
        "scale-length",
        "index-kind",
        "kind-mismatch",
    ],
)
def test_a_damaged_state_is_a_persistence_error(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None]
) -> None:
    with pytest.raises(errors.PersistenceError):
        load_detector(edited(tmp_path, edit))


def test_a_damaged_condition_state_is_a_persistence_error(tmp_path: Path) -> None:
    path = edited(tmp_path, lambda s: s["preprocessor"]["conditions"].pop("period"), "v1_cvae")
    with pytest.raises(errors.PersistenceError, match="incomplete or damaged"):
        load_detector(path)
    (path / "state.json").write_text("[1, 2]")
    with pytest.raises(errors.PersistenceError, match="format_version"):
        load_detector(path)


def test_format_1_files_from_before_the_weights_options_upgrade_explicitly(tmp_path: Path) -> None:
    path = tmp_path / "old"
    shutil.copytree(FIXTURES / "v1_ae", path)
    state = json.loads((path / "state.json").read_text())
    del state["window_weight"], state["feature_weight"]
    (path / "state.json").write_text(json.dumps(state))
    det = load_detector(path, device="cpu")
    assert det.window_weight_ == 0.0  # what those files were scored with
    np.testing.assert_array_equal(det.feature_weight_, np.ones(det.n_features_in_))


def test_learned_state_is_every_field_by_name() -> None:
    det = load_detector(FIXTURES / "v1_vae", device="cpu")
    learned = LearnedState.model_validate(LearnedState.of(det))
    assert learned.threshold == det.threshold_ and learned.window == det.window_
    blank = type(det)(det.config)
    learned.restore(blank)
    for name in LearnedState.model_fields:
        assert np.array_equal(getattr(blank, f"{name}_"), getattr(det, f"{name}_"))
