"""``reconad bench``: generated benchmark folders, every output file, and an honest floor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from synthetic import (
    config_file,
    normal_series,
    with_anomalies,
    write_entity,
)

from detector import bench, errors
from detector.baselines import Baseline, PyODAutoEncoder, create_baseline
from detector.bench import list_entities, load_entity, run_bench, summarise
from detector.evaluation import auc_pr
from service.cli import main  # the `reconad` entry point


@pytest.fixture(scope="module")
def bench_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    write_entity(root / "alpha" / "e1", seed=1)
    write_entity(root / "alpha" / "e2", seed=2)
    write_entity(root / "alpha" / "quiet", seed=3, anomalies=False)
    write_entity(root / "beta" / "e1", seed=4)
    return root


def test_bench_command_writes_every_figure_and_beats_random(
    bench_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path)
    out, kept = tmp_path / "out", tmp_path / "scores"
    argv = ["bench", str(bench_root), "--kinds", "ae", "--baselines", "random,pca"]
    assert (
        main([*argv, "--config", str(config), "--out", str(out), "--scores", str(kept), "-q"]) == 0
    )

    printed = capsys.readouterr().out
    assert "ae_ratio" in printed and "12 fits" in printed
    records = json.loads((out / "results.json").read_text())
    assert len(records) == 4 * 3  # entities x methods
    assert not [r for r in records if r["error"]]
    summary = pd.read_csv(out / "summary.csv", index_col=[0, 1])
    rows = {key: row.to_dict() for key, row in summary.iterrows()}
    assert set(summary.index.get_level_values("dataset")) == {"alpha", "beta"}
    assert rows[("alpha", "ae")]["entities"] == 2  # the quiet entity has no labels
    for dataset in ("alpha", "beta"):
        ae, rnd = rows[(dataset, "ae")], rows[(dataset, "random")]
        assert ae["vus_pr"] > 2 * rnd["vus_pr"]  # random sits near the anomaly ratio
        assert 0 < ae["f1"] <= ae["best_f1_upper_bound"]
        assert np.isnan(rnd["f1"])  # baselines have no threshold of their own
    report = (out / "summary.md").read_text()
    assert report.startswith("Command: `reconad bench ")
    assert "| alpha | 2 |" in report and "(ae / pca)" in report
    ratios = pd.read_csv(out / "ratios.csv", index_col=0)
    assert ratios.loc["alpha", "best_baseline"] == "pca"
    assert pd.read_csv(out / "results.csv")["metrics.vus_pr"].notna().sum() == 9
    # the kept scores reproduce the reported figures without a refit
    _, _, labels = load_entity(bench_root / "alpha" / "e1")
    by_key = {(r["dataset"], r["entity"], r["method"]): r for r in records}
    for method in ("ae", "pca"):
        record = by_key[("alpha", "e1", method)]
        with np.load(kept / "alpha" / "e1" / f"{method}.npz") as saved:
            scores, threshold = saved["scores"], float(saved["threshold"])
            assert np.array_equal(saved["labels"], labels) and len(scores) == len(labels)
            assert int(saved["window"]) >= 2
        assert auc_pr(labels, scores) == pytest.approx(record["metrics"]["auc_pr"])
        if method == "ae":
            assert np.mean(scores > threshold) == pytest.approx(record["flagged_fraction"])
        else:
            assert np.isnan(threshold)  # baselines have no threshold


def test_limit_time_budget_and_failures_are_reported(bench_root: Path) -> None:
    assert [p.name for _, p in list_entities(bench_root, ["alpha"], limit=2)] == ["e1", "e2"]
    with pytest.raises(FileNotFoundError, match="gamma"):
        list_entities(bench_root, ["gamma"])
    assert run_bench(bench_root, ["alpha"], ["random"], time_budget_s=0.0) == []  # all skipped
    assert len(run_bench(bench_root, ["alpha"], ["random"], time_budget_s=600.0)) == 3
    bad = run_bench(bench_root, ["beta"], ["ae"], overrides={"window": 4000})
    assert bad[0].error is not None and "TooShortError" in bad[0].error
    assert summarise(bad).loc[("beta", "ae"), "failed"] == 1


@pytest.mark.parametrize(
    ("config", "extra", "message"),
    [
        ('{"windw": 5}', [], "invalid configuration: windw"),
        ('{"score_reduction": "median"}', [], "invalid configuration: score_reduction"),
        ("not json", [], "is not valid JSON"),
        ("{}", ["--kinds", "ae,foo"], "unknown method(s) ['foo']"),
        ("{}", ["--datasets", "gamma"], "no dataset folder"),
    ],
)
def test_bad_bench_input_is_refused_before_any_fit(
    bench_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    config: str,
    extra: list[str],
    message: str,
) -> None:
    path, out = tmp_path / "config.json", tmp_path / "out"
    path.write_text(config)
    argv = ["bench", str(bench_root), "--config", str(path), "--out", str(out), "-q", *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing half-written


def test_baselines_take_the_detectors_window_seed_point_rule_and_split(
    bench_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[tuple[object, ...]] = []
    real = create_baseline

    def record(*args: Any) -> Baseline | PyODAutoEncoder:
        made.append(args)
        return real(*args)

    monkeypatch.setattr(bench, "create_baseline", record)
    overrides = {
        "window": 16,
        "score_reduction": "max",
        "training": {"seed": 3, "validation_fraction": 0.3},
    }
    (result,) = run_bench(bench_root, ["beta"], ["knn"], overrides=overrides)
    assert result.error is None and made == [("knn", 16, 3, "max", 0.3)]


def test_max_rule_scores_each_point_by_its_worst_window() -> None:
    train = normal_series(600, seed=5)
    test, _, _ = with_anomalies(normal_series(400, seed=6, start=600), seed=6)
    by_rule = {
        rule: create_baseline("knn", window=16, reduction=rule).fit(train)
        for rule in ("mean", "max")
    }
    scores = {rule: b.anomaly_score(test).to_numpy() for rule, b in by_rule.items()}
    knn = by_rule["max"]
    assert isinstance(knn, Baseline)
    (segment,) = knn.pre_.transform(test, max_fill=16)
    flat = knn._flat_windows([segment], stride=1, limit=None)
    window_scores = knn._window_cells(flat, segment.values.shape[1])[:, 0, 0]  # (B,)
    expected = [window_scores[max(0, t - 15) : t + 1].max() for t in range(len(test))]
    np.testing.assert_allclose(scores["max"], expected, rtol=1e-6)
    assert np.all(scores["max"] >= scores["mean"] - 1e-9)
    assert np.mean(scores["max"] > scores["mean"] + 1e-9) > 0.5


def test_load_entity_keeps_rows_as_the_files_hold_them(tmp_path: Path) -> None:
    """Unsorted and repeated timestamps reach the methods as they are: the detectors' timestamp
    policy scores every row, so labels stay aligned row for row."""
    folder = tmp_path / "e"
    folder.mkdir()
    pd.DataFrame({"timestamp": [2, 1, 1, 3], "value": [2.0, 1.0, 9.0, 3.0]}).to_csv(
        folder / "train.csv", index=False
    )
    pd.DataFrame({"timestamp": [5, 4, 4], "value": [1.0, 2.0, 2.0], "label": [0, 1, 1]}).to_csv(
        folder / "test.csv", index=False
    )
    train, test, labels = load_entity(folder)
    assert list(train.index) == [2, 1, 1, 3] and list(train["value"]) == [2.0, 1.0, 9.0, 3.0]
    assert "label" not in test.columns and list(labels) == [0, 1, 1]
    assert list(test.index) == [5, 4, 4]


def test_compare_entities_sorts_by_difference_and_skips_entities_without_anomalies() -> None:
    import importlib.util

    path = Path(__file__).parents[2] / "benchmarks" / "compare_entities.py"
    spec = importlib.util.spec_from_file_location("compare_entities", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = [
        ("d", "e1", "ae", 5, 0.9),
        ("d", "e1", "knn", 5, 0.5),
        ("d", "e2", "ae", 5, 0.2),
        ("d", "e2", "knn", 5, 0.6),
        ("d", "quiet", "ae", 0, np.nan),
        ("d", "quiet", "knn", 0, np.nan),
        ("other", "e1", "ae", 5, 0.0),
    ]
    results = pd.DataFrame(
        rows, columns=["dataset", "entity", "method", "n_anomalous", "metrics.vus_pr"]
    )
    table = module.compare(results, "d", "ae", "knn")
    assert list(table.index) == ["e2", "e1"]
    assert table["diff"].tolist() == pytest.approx([-0.4, 0.4])
    with pytest.raises(SystemExit, match="pca"):
        module.compare(results, "d", "ae", "pca")
    disjoint = pd.DataFrame(
        [("other", "e1", "ae", 5, 0.1), ("other", "e2", "knn", 5, 0.5)], columns=results.columns
    )
    with pytest.raises(SystemExit, match="no other entity"):
        module.compare(disjoint, "other", "ae", "knn")


def test_pyod_peer_scores_every_row_and_beats_random(bench_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("pyod", reason="the pyod_ae baseline needs the bench extra (PyOD)")
    results = run_bench(bench_root, ["beta"], ["pyod_ae", "random"])
    by_method = {r.method: r for r in results}
    assert all(r.error is None for r in results)
    assert by_method["pyod_ae"].fit_s > 0
    assert by_method["pyod_ae"].metrics["auc_pr"] > by_method["random"].metrics["auc_pr"]
    train, test, _ = load_entity(bench_root / "beta" / "e1")
    peer = create_baseline("pyod_ae").fit(train.iloc[:400])  # a short fit: few windows
    assert peer.window_ == 100  # several features: PyOD's window of 100
    test = test.iloc[:300]
    shuffled = np.random.default_rng(0).permutation(len(test))
    np.testing.assert_allclose(
        peer.anomaly_score(test.iloc[shuffled]).to_numpy(),
        peer.anomaly_score(test).to_numpy()[shuffled],
        rtol=1e-5,
    )
    table = summarise(results)
    assert "fit seconds" in bench.markdown_report(table)


def test_pyod_peer_without_pyod_is_a_clear_error(
    bench_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyod", None)  # import pyod now fails
    monkeypatch.setitem(sys.modules, "pyod.models.ts_od", None)
    with pytest.raises(errors.ConfigError, match=r"reconad\[bench\]"):
        run_bench(bench_root, ["beta"], ["pyod_ae"])
