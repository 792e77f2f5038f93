"""One table from several ``reconad bench --replay --feedback`` runs.

    python benchmarks/feedback_summary.py OUT.md RUN_DIR [RUN_DIR ...]

Each run directory holds the ``results.json`` and ``summary.md`` (first line: the command)
that the command writes; the combined summary lists every command, then the tables of
:func:`detector.feedback_replay.feedback_markdown` over all results.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from detector.feedback_replay import FeedbackResult, feedback_markdown, feedback_table


def combine(out: Path, runs: list[Path]) -> str:
    """Write the combined summary to ``out`` and return it."""
    results = [
        FeedbackResult(**record)
        for run in runs
        for record in json.loads((run / "results.json").read_text())
    ]
    commands = [(run / "summary.md").read_text().splitlines()[0] for run in runs]
    text = "\n\n".join(commands) + "\n\n" + feedback_markdown(feedback_table(results))
    out.write_text(text)
    return text


if __name__ == "__main__":
    sys.stdout.write(combine(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]))
