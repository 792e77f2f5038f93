"""Command-line interface of the detector library: ``train``, ``score`` and ``evaluate``.

The product's ``reconad`` command adds these subcommands to its own parser with
:func:`add_commands`; ``python -m detector.cli`` runs them on their own::

    reconad train data.csv --out model/ --window 64 --epochs 20
    reconad score model/ data.csv --out scores.parquet --plot scores.png
    reconad evaluate model/ labelled.csv --json metrics.json

Data files are CSV (``.csv``, ``.csv.gz``) or Parquet (``.parquet``), chosen by extension (see
:mod:`detector.io`). Results go to stdout; logging and the training progress bar go to stderr.

Exit codes: 0 on success; 2 for anything the user can fix, printed as ``error: <message>``
without a traceback (bad arguments, a missing or unreadable file, any
:class:`~detector.errors.ReconADError`); 130 when interrupted.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError
from tqdm import tqdm

from . import decision
from .baselines import BASELINES, PEER_BASELINES, pyod_available
from .bench import (
    BenchResult,
    list_entities,
    markdown_report,
    ratio_table,
    run_bench,
    summarise,
)
from .config import KINDS, DetectorConfig, TrainingConfig
from .detector import Detector, create_detector
from .errors import ColumnsError, ConfigError, InputError, LabelsError, ReconADError
from .evaluation import evaluate
from .feedback_replay import (
    FeedbackResult,
    feedback_markdown,
    feedback_table,
    run_feedback_replay,
)
from .io import read_frame, table_format, write_table
from .persistence import load_detector
from .plotting import PLOT_SUFFIXES, plot_scores
from .replay import ReplayResult, replay_markdown, replay_table, run_replay
from .training import TrainingProgress

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "add_commands",
    "build_parser",
    "configure_logging",
    "main",
]

# Under ``python -m detector.cli`` this module is ``__main__``; keep its records in the package.
logger = logging.getLogger("detector.cli" if __name__ == "__main__" else __name__)

EXIT_OK = 0
#: Exit code of every error the user can fix (argparse uses the same code for bad arguments).
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

DEFAULT_LABEL_COLUMN = "label"

#: Order and wording of the metrics table printed by ``evaluate``.
_METRIC_ROWS = (
    ("vus_pr", "VUS-PR"),
    ("vus_roc", "VUS-ROC"),
    ("auc_pr", "AUC-PR"),
    ("auc_roc", "AUC-ROC"),
    ("precision", "precision at the threshold"),
    ("recall", "recall at the threshold"),
    ("f1", "F1 at the threshold"),
    ("best_f1_upper_bound", "best F1 (oracle upper bound)"),
)

Command = Callable[[argparse.Namespace], int]


# ================================================================= parser
def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``train``, ``score``, ``evaluate`` and ``bench`` subcommands to a parser.

    Each subparser sets ``func``: call ``args.func(args)`` after parsing to run the command;
    it returns the exit code and never raises for errors the user can fix.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The result of ``parser.add_subparsers()``.
    """
    add_bench_command(subparsers)
    train = subparsers.add_parser(
        "train",
        help="fit a detector on normal data and save it",
        description="Fit a detector on (mostly) normal data and save it to a model directory. "
        "Command-line options override the values of --config.",
    )
    train.add_argument("data", type=Path, help="training data (.csv, .csv.gz or .parquet)")
    train.add_argument(
        "--out",
        "-o",
        type=Path,
        required=True,
        metavar="MODEL_DIR",
        help="directory to save the model to (replaced if it exists)",
    )
    train.add_argument(
        "--config",
        type=Path,
        metavar="CONFIG_JSON",
        help="detector configuration as JSON (the fields of DetectorConfig)",
    )
    train.add_argument("--kind", choices=KINDS, help="model kind (default: the config's, else ae)")
    train.add_argument(
        "--window",
        type=_window_arg,
        metavar="N|auto",
        help="window length in points, or 'auto' for the longest the data allow: 256 points, "
        "2,048 values, what the validation split holds (default: the config's, else auto)",
    )
    train.add_argument(
        "--epochs",
        type=_positive_int,
        metavar="N",
        help="maximum training epochs (default: the config's, else 40)",
    )
    train.add_argument(
        "--max-seconds",
        type=_max_seconds_arg,
        metavar="S",
        default=argparse.SUPPRESS,
        help="cap on training wall time in seconds, or 'none' (default: the config's, else "
        f"{TrainingConfig.model_fields['max_seconds'].default:g})",
    )
    train.add_argument(
        "--seed",
        type=_non_negative_int,
        metavar="N",
        help="random seed (default: the config's, else 0)",
    )
    train.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        help="where to train (default: the config's, else auto)",
    )
    train.add_argument(
        "--features",
        type=_features_arg,
        metavar="A,B,...",
        help="comma-separated feature columns (default: every numeric column)",
    )
    _add_data_options(train, label_help="column to drop before training, if present")
    train.set_defaults(func=cmd_train)

    score = subparsers.add_parser(
        "score",
        help="score a series with a saved model",
        description="Score a series: write the anomaly score and flag of every point.",
    )
    score.add_argument("model_dir", type=Path, help="a model saved by 'train'")
    score.add_argument("data", type=Path, help="series to score (.csv, .csv.gz or .parquet)")
    score.add_argument(
        "--out",
        "-o",
        type=Path,
        required=True,
        metavar="SCORES",
        help="output table (.csv, .csv.gz or .parquet): the index, score, anomaly",
    )
    score.add_argument("--plot", type=Path, metavar="PLOT_PNG", help="also draw the scores")
    score.add_argument(
        "--reconstruct",
        action="store_true",
        help="also write the expected value of every feature (expected_<feature>)",
    )
    _add_model_device(score)
    _add_data_options(score, label_help="column to drop before scoring, if present")
    score.set_defaults(func=cmd_score)

    evaluate_ = subparsers.add_parser(
        "evaluate",
        help="score labelled data and report detection metrics",
        description="Score labelled data and compare with the labels (0 normal, 1 anomalous).",
    )
    evaluate_.add_argument("model_dir", type=Path, help="a model saved by 'train'")
    evaluate_.add_argument("data", type=Path, help="labelled series (.csv, .csv.gz or .parquet)")
    evaluate_.add_argument("--json", type=Path, metavar="OUT_JSON", help="also write the metrics")
    evaluate_.add_argument(
        "--plot", type=Path, metavar="PLOT_PNG", help="also draw the scores and labels"
    )
    _add_model_device(evaluate_)
    _add_data_options(evaluate_, label_help="column holding the 0/1 labels")
    evaluate_.set_defaults(func=cmd_evaluate)


def _add_data_options(parser: argparse.ArgumentParser, label_help: str) -> None:
    parser.add_argument(
        "--time-column",
        metavar="NAME",
        help="column holding the time of each row; integers stay integers, anything else is "
        "parsed as timestamps (default: 'timestamp' if present, else the row number)",
    )
    parser.add_argument(
        "--label-column",
        default=DEFAULT_LABEL_COLUMN,
        metavar="NAME",
        help=f"{label_help} (default: {DEFAULT_LABEL_COLUMN})",
    )
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="no progress bar and no informational logs"
    )


def _add_model_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        help="where to run the model (default: the device the model was configured with)",
    )


def build_parser() -> argparse.ArgumentParser:
    """A parser with just this library's subcommands."""
    parser = argparse.ArgumentParser(
        prog="python -m detector.cli",
        description="Train, score and evaluate ReconAD anomaly detectors.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the command.

    Returns
    -------
    int
        The exit code. Invalid arguments and ``--help`` raise ``SystemExit`` as argparse does.
    """
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    func: Command = args.func
    return func(args)


# ================================================================= argument types
def _window_arg(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a window length in points or 'auto', got {text!r}"
        ) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _max_seconds_arg(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds or 'none', got {text!r}"
        ) from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _features_arg(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated column names such as 'cpu,memory', got {text!r}"
        )
    return names


# ================================================================= shared helpers
class _StderrHandler(logging.Handler):
    """Writes records to whatever ``sys.stderr`` is when the record is emitted."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # logging must never break the command
            self.handleError(record)


def configure_logging(quiet: bool = False) -> None:
    """Show the library's log records on stderr: INFO and above, WARNING and above if ``quiet``.

    A stderr handler is added to the root logger only when no handler is configured yet, so an
    application that set up logging keeps its own handlers.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        root.addHandler(handler)
    logging.getLogger(__package__ or "detector").setLevel(
        logging.WARNING if quiet else logging.INFO
    )


def _reports_errors(func: Command) -> Command:
    """Turn errors the user can fix into ``error: <message>`` on stderr and exit code 2."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        configure_logging(quiet=bool(getattr(args, "quiet", False)))
        try:
            return func(args)
        except ReconADError as exc:
            _print_error(str(exc))
        except OSError as exc:
            _print_error(_describe_os_error(exc))
        except KeyboardInterrupt:
            _print_error("interrupted")
            return EXIT_INTERRUPTED
        return EXIT_ERROR

    return run


def _print_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _describe_os_error(exc: OSError) -> str:
    if exc.strerror and exc.filename is not None:
        return f"{exc.strerror}: {exc.filename!s}"
    return str(exc)


def _describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "invalid configuration: " + "; ".join(parts)


def _check_plot_path(path: Path | None) -> None:
    if path is not None and path.suffix.lower() not in PLOT_SUFFIXES:
        raise InputError(
            f"cannot write a plot to {str(path)!r}; use a file name ending in "
            f"{', '.join(PLOT_SUFFIXES)}"
        )


def _drop_label(frame: pd.DataFrame, label_column: str, features: list[str] | None) -> pd.DataFrame:
    """Remove the label column unless it is one of the model's features."""
    if label_column in frame.columns and (features is None or label_column not in features):
        logger.info("ignoring the %r column: labels are not model input", label_column)
        return frame.drop(columns=[label_column])
    return frame


def _check_index(detector: Detector, frame: pd.DataFrame, args: argparse.Namespace) -> None:
    """Say which option fixes a time index that differs from the training data's."""
    fitted = str(detector.preprocessor_.index_kind_)
    got = "datetime" if isinstance(frame.index, pd.DatetimeIndex) else "integer"
    if fitted == got:
        return
    name = Path(args.data).name
    if fitted == "datetime" and args.time_column is None:
        raise InputError(
            f"the model was trained on timestamps but {name} has no 'timestamp' column; name "
            "its time column with --time-column"
        )
    if fitted == "datetime":
        raise InputError(
            f"the model was trained on timestamps but the time column {args.time_column!r} of "
            f"{name} holds integers; name the timestamp column with --time-column"
        )
    raise InputError(
        f"the model was trained on integer time steps but {name} is indexed by timestamps "
        f"(column {frame.index.name!r}); index it by integer steps as in training"
    )


def _load(args: argparse.Namespace) -> Detector:
    detector = load_detector(args.model_dir, device=args.device)
    logger.info("loaded %r from %s", detector, args.model_dir)
    return detector


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


# ================================================================= train
def _load_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no such config file: {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"could not read the config file {str(path)!r}: {exc}") from exc
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"the config file {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ConfigError(f"the config file {str(path)!r} must hold a JSON object")
    return payload


def _train_config(args: argparse.Namespace) -> DetectorConfig:
    """The config file's settings with the command-line options applied on top."""
    payload = _load_config_file(args.config) if args.config is not None else {}
    training = payload.get("training", {})
    if not isinstance(training, dict):
        raise ConfigError("'training' in the config must be a JSON object")
    top = {"kind": args.kind, "window": args.window, "features": args.features}
    payload.update({k: v for k, v in top.items() if v is not None})
    nested = {"max_epochs": args.epochs, "seed": args.seed, "device": args.device}
    explicit = {k: v for k, v in nested.items() if v is not None}
    if hasattr(args, "max_seconds"):  # absent unless given; "none" (None) removes the cap
        explicit["max_seconds"] = args.max_seconds
    payload["training"] = {**training, **explicit}
    try:
        return DetectorConfig.model_validate(payload)
    except ValidationError as exc:
        raise ConfigError(_describe_validation(exc)) from None


class _EpochBar:
    """A tqdm bar over epochs, driven by the detector's progress callback.

    The bar is opened on the first epoch so that log lines written while the network is being
    set up do not cut through it.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: tqdm[Any] | None = None

    def __call__(self, progress: TrainingProgress) -> None:
        if self._bar is None:
            self._bar = tqdm(
                total=progress.max_epochs,
                desc="training",
                unit="epoch",
                file=sys.stderr,
                disable=not self.enabled,
                dynamic_ncols=True,
            )
        losses = progress.losses
        order: list[str] = [n for n in ("train", "val") if n in losses]
        order += [n for n in losses if n not in order]
        postfix = {name: f"{losses[name]:.4g}" for name in order}
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@_reports_errors
def cmd_train(args: argparse.Namespace) -> int:
    """``train DATA --out MODEL_DIR``: fit a detector and save it."""
    config = _train_config(args)
    frame = read_frame(args.data, args.time_column)
    frame = _drop_label(frame, args.label_column, config.features)
    logger.info("training data: %d rows, columns %s", len(frame), [str(c) for c in frame.columns])
    detector = create_detector(config)
    bar = _EpochBar(enabled=not args.quiet)
    started = time.perf_counter()
    try:
        detector.fit(frame, progress=bar)
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    detector.save(args.out)
    print(
        f"trained {config.kind} model: window={detector.window_} "
        f"threshold={detector.threshold_:.4g} epochs={len(detector.history_)} "
        f"seconds={seconds:.1f} -> {args.out}"
    )
    return EXIT_OK


# ================================================================= score
@_reports_errors
def cmd_score(args: argparse.Namespace) -> int:
    """``score MODEL_DIR DATA --out SCORES``: write each point's score and anomaly flag."""
    table_format(args.out)  # fail on a bad output name before any work
    _check_plot_path(args.plot)
    detector = _load(args)
    frame = read_frame(args.data, args.time_column)
    _check_index(detector, frame, args)
    frame = _drop_label(frame, args.label_column, detector.config.features)
    details = detector.score_details(frame, reconstruct=args.reconstruct)
    threshold = detector.threshold_
    flags = details.flags
    out = pd.DataFrame({"score": details.scores, "anomaly": flags}, index=frame.index)
    key = detector.config.key_column
    if key is not None and key in frame.columns:
        out.insert(0, key, frame[key])
    if details.expected is not None:
        for feature in detector.feature_names_in_:
            out[f"expected_{feature}"] = details.expected[feature]
    write_table(out, args.out)
    if args.plot is not None:
        plot_scores(
            frame[detector.feature_names_in_],
            details.scores,
            threshold,
            args.plot,
            flags=flags,
            expected=details.expected,
            title=Path(args.data).name,
        )
    n_flagged = int(flags.sum())
    print(
        f"scored {len(out)} points: {n_flagged} flagged (threshold {threshold:.4g}) -> {args.out}"
    )
    return EXIT_OK


# ================================================================= evaluate
@_reports_errors
def cmd_evaluate(args: argparse.Namespace) -> int:
    """``evaluate MODEL_DIR DATA``: score labelled data and print detection metrics."""
    _check_plot_path(args.plot)
    detector = _load(args)
    frame = read_frame(args.data, args.time_column)
    _check_index(detector, frame, args)
    label_column: str = args.label_column
    if label_column not in frame.columns:
        raise ColumnsError(
            f"label column {label_column!r} not found; the columns are "
            f"{[str(c) for c in frame.columns]}. Name it with --label-column"
        )
    labels = frame[label_column]
    if labels.isna().any():
        raise LabelsError(
            f"the label column {label_column!r} has {int(labels.isna().sum())} missing "
            "value(s); label every row 0 (normal) or 1 (anomalous)"
        )
    features = frame.drop(columns=[label_column])
    scores = detector.anomaly_score(features)
    threshold, window = detector.threshold_, detector.window_
    try:
        metrics = evaluate(labels.to_numpy(), scores.to_numpy(), threshold, window)
    except LabelsError as exc:
        raise LabelsError(f"label column {label_column!r}: {exc}") from exc
    flags = pd.Series(decision.flags(scores, threshold), index=scores.index, name="anomaly")
    n_points, n_positive = len(frame), int((labels.to_numpy() == 1).sum())
    n_flagged = int(flags.sum())

    print(
        f"{n_points} points, {n_positive} labelled anomalous "
        f"({n_positive / max(n_points, 1):.2%}), {n_flagged} flagged at threshold "
        f"{threshold:.4g}; VUS sliding window {window}"
    )
    if math.isnan(metrics["auc_roc"]):
        print("the labels hold only one class, so the metrics are undefined (n/a)")
    width = max(len(title) for _, title in _METRIC_ROWS)
    print(f"{'metric':<{width}}  value")
    for key, title in _METRIC_ROWS:
        line = f"{title:<{width}}  {_fmt(metrics[key])}"
        if key == "best_f1_upper_bound" and not math.isnan(metrics[key]):
            line += f"  (threshold {metrics['best_f1_threshold']:.4g}, chosen with the labels)"
        print(line)

    if args.json is not None:
        report = {
            "model": str(args.model_dir),
            "data": str(args.data),
            "n_points": n_points,
            "n_labelled_anomalies": n_positive,
            "n_flagged": n_flagged,
            "threshold": threshold,
            "sliding_window": window,
            "metrics": {k: (None if math.isnan(v) else v) for k, v in metrics.items()},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        logger.info("wrote the metrics to %s", args.json)
    if args.plot is not None:
        plot_scores(
            features[detector.feature_names_in_],
            scores,
            threshold,
            args.plot,
            flags=flags,
            labels=labels,
            title=Path(args.data).name,
        )
    return EXIT_OK


def _write_run(out: Path, records: list[dict[str, Any]], table: pd.DataFrame) -> None:
    """A run's ``results.json`` and ``results.csv`` (one record per fit) and ``summary.csv``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(records, indent=1, default=float))
    pd.json_normalize(records).to_csv(out / "results.csv", index=False)
    table.to_csv(out / "summary.csv")


def _recorder(out: Path, bar: Any, label: Callable[[Any], str]) -> Callable[[Any], None]:
    """A result callback that appends each result (a dataclass) to ``out/results.jsonl`` as
    it ends, a long run's record, and moves the progress bar."""
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "results.jsonl"
    partial.write_text("")

    def tick(result: Any) -> None:
        with partial.open("a") as fh:
            fh.write(json.dumps(asdict(result), default=float) + "\n")
        bar.set_postfix_str(label(result))
        bar.update()

    return tick


def _summarise(
    args: argparse.Namespace,
    results: list[Any],
    table: pd.DataFrame,
    started: float,
    headline: str,
    markdown: str,
) -> float:
    """Write a replay run's results and its ``summary.md`` (the command, ``headline`` with the
    seconds taken, ``markdown``); return the seconds taken."""
    _write_run(args.out, [asdict(r) for r in results], table)
    elapsed = time.perf_counter() - started
    command = shlex.join(["reconad", *args.argv])
    (args.out / "summary.md").write_text(
        f"Command: `{command}`\n\n{headline} in {elapsed:.0f} s.\n\n{markdown}"
    )
    return elapsed


def _feedback(args: argparse.Namespace, kinds: list[str], overrides: dict[str, Any]) -> int:
    """``bench --replay --feedback``: the replay with simulated labels (see
    :mod:`detector.feedback_replay`)."""
    options = _load_config_file(args.monitor) if args.monitor else {}
    bar = tqdm(unit="replay", disable=args.quiet)

    def label(result: FeedbackResult) -> str:
        return f"{result.dataset}/{result.entity} {result.kind} {result.mode}"

    tick = _recorder(args.out, bar, label)
    started = time.perf_counter()
    try:
        results = run_feedback_replay(
            args.root, args.datasets, kinds, args.chunk, args.limit, overrides, options, tick
        )
    except ValidationError as exc:
        raise ConfigError(_describe_validation(exc)) from None
    finally:
        bar.close()
    table = feedback_table(results)
    elapsed = _summarise(
        args,
        results,
        table,
        started,
        f"Kinds {', '.join(kinds)}, chunks of {args.chunk} points, second halves only, "
        f"{len(results)} results",
        feedback_markdown(table),
    )
    print(feedback_markdown(table))
    print(f"{len(results)} results in {elapsed:.0f} s; results in {args.out}")
    return 0


def _replay(
    args: argparse.Namespace, kind: str, baselines: list[str], overrides: dict[str, Any]
) -> int:
    """``bench --replay``: the live-detection replay, the detector and ``baselines`` under the
    same online threshold (see :mod:`detector.replay`)."""
    if args.retrain_every is not None and args.retrain_every % args.chunk:
        raise ConfigError(
            f"--retrain-every ({args.retrain_every}) must be a multiple of --chunk ({args.chunk})"
        )
    options = _load_config_file(args.monitor) if args.monitor else {}
    entities = list_entities(args.root, args.datasets, args.limit)
    per_entity = (2 if args.retrain_every else 1) + len(baselines)
    bar = tqdm(total=len(entities) * per_entity, disable=args.quiet)

    def label(result: ReplayResult) -> str:
        return f"{result.dataset}/{result.entity} {result.method} {result.mode}"

    tick = _recorder(args.out, bar, label)
    started = time.perf_counter()
    try:
        results = run_replay(
            args.root,
            args.datasets,
            kind,
            args.chunk,
            args.retrain_every,
            args.limit,
            overrides,
            options,
            on_result=tick,
            models=args.models,
            baselines=baselines,
        )
    except ValidationError as exc:
        raise ConfigError(_describe_validation(exc)) from None
    finally:
        bar.close()
    table = replay_table(results)
    n_kind = sum(r.method == kind for r in results)
    against = (
        f" and {len(results) - n_kind} of baselines ({', '.join(baselines)}: each fitted on "
        "the first 1 - validation_fraction of train, the monitor's threshold fitted on its "
        "scores of the rest, its batch test scores decided in order)"
        if baselines
        else ""
    )
    elapsed = _summarise(
        args,
        results,
        table,
        started,
        f"Kind {kind}, chunks of {args.chunk} points, {n_kind} replays{against}"
        + (
            f" (fitted models reused from / saved to {args.models}: the same models for every "
            "run of one detector config)"
            if args.models
            else ""
        ),
        replay_markdown(table),
    )
    pd.set_option("display.width", 250)
    print(table.round(3).to_string())
    print(
        f"\n{n_kind} replays of {kind} and {len(results) - n_kind} of baselines in "
        f"{elapsed:.0f} s; results in {args.out}"
    )
    return 0


# ================================================================= command line
def add_bench_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` to a command-line parser."""
    bench = subparsers.add_parser(
        "bench",
        help="compare detectors with baselines on labelled benchmark folders",
        description="Fit every detector kind and baseline on every entity of a benchmark folder "
        "and compare them (see detector.bench).",
    )
    bench.add_argument("root", type=Path, help="folder of <dataset>/<entity>/{train,test}.csv")
    bench.add_argument("--datasets", type=lambda s: s.split(","), help="comma-separated datasets")
    bench.add_argument("--kinds", default=",".join(KINDS), help="detector kinds (comma-separated)")
    bench.add_argument(
        "--baselines",
        default=",".join([*BASELINES, *(PEER_BASELINES if pyod_available() else ())]),
        help=f"baselines (comma-separated, or 'none'): {', '.join(BASELINES)}, and "
        f"{', '.join(PEER_BASELINES)} (PyOD's AutoEncoder; the default when PyOD is "
        "installed: pip install 'reconad[bench]')",
    )
    bench.add_argument("--limit", type=int, help="at most this many entities per dataset")
    bench.add_argument(
        "--time-budget", type=float, metavar="S", help="stop starting entities after S s"
    )
    bench.add_argument("--config", type=Path, help="detector config JSON applied to every kind")
    bench.add_argument("--out", type=Path, default=Path("bench-results"), help="output folder")
    bench.add_argument(
        "--scores",
        type=Path,
        metavar="DIR",
        help="also keep every method's test scores, labels and threshold (DIR/<dataset>/"
        "<entity>/<method>.npz) for offline studies",
    )
    bench.add_argument(
        "--replay",
        action="store_true",
        help="stream each entity's test part through the live monitor instead (see "
        "detector.replay); uses the first of --kinds, and decides every one of --baselines "
        "under the same online threshold",
    )
    bench.add_argument(
        "--chunk", type=_positive_int, default=100, help="--replay: points per update (100)"
    )
    bench.add_argument(
        "--retrain-every",
        type=_positive_int,
        metavar="R",
        help="--replay: also replay with a refit every R test points (a multiple of --chunk)",
    )
    bench.add_argument(
        "--monitor", type=Path, metavar="JSON", help="--replay: monitor options (JSON object)"
    )
    bench.add_argument(
        "--models",
        type=Path,
        metavar="DIR",
        help="--replay: save each entity's fitted detector in DIR and reuse it in later runs "
        "of the same detector config (compare monitor options without refitting)",
    )
    bench.add_argument(
        "--feedback",
        action="store_true",
        help="--replay: label the first half of each test part as an operator would and "
        "measure the second half with and without feedback, for every one of --kinds (see "
        "detector.feedback_replay)",
    )
    bench.add_argument("--quiet", "-q", action="store_true")
    bench.set_defaults(func=cmd_bench)


@_reports_errors
def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark, print the tables and write JSON/CSV results."""
    kinds = [k for k in args.kinds.split(",") if k]
    baselines = [] if args.baselines == "none" else [b for b in args.baselines.split(",") if b]
    overrides = _load_config_file(args.config) if args.config else {}
    if args.replay and args.feedback:
        return _feedback(args, kinds or ["ae"], overrides)
    if args.replay:
        return _replay(args, kinds[0] if kinds else "ae", baselines, overrides)
    entities = list_entities(args.root, args.datasets, args.limit)
    bar = tqdm(total=len(entities) * (len(kinds) + len(baselines)), unit="fit", disable=args.quiet)

    def tick(result: BenchResult) -> None:
        bar.set_postfix_str(f"{result.dataset}/{result.entity} {result.method}")
        bar.update()

    started = time.perf_counter()
    try:
        results = run_bench(
            args.root,
            args.datasets,
            [*kinds, *baselines],
            args.limit,
            args.time_budget,
            overrides,
            on_result=tick,
            scores_dir=args.scores,
        )
    except ValidationError as exc:
        raise ConfigError(_describe_validation(exc)) from None
    finally:
        bar.close()
    table = summarise(results)
    _write_run(args.out, [asdict(r) for r in results], table)
    elapsed = time.perf_counter() - started
    report = markdown_report(table)
    command = shlex.join(["reconad", *args.argv])
    (args.out / "summary.md").write_text(
        f"Command: `{command}`\n\n{len(results)} fits in {elapsed:.0f} s.\n\n{report}"
    )
    pd.set_option("display.width", 200)
    print(table.round(3).to_string())
    if baselines:
        ratios = ratio_table(table)
        ratios.to_csv(args.out / "ratios.csv")
        print()
        print(ratios.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\n{len(results)} fits in {elapsed:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
