"""Seconds of one INSERT of 200 stream points into SQLite, by the ORM's bulk insert and by a
Core statement on the table (what the stream's write uses), interleaved, 50 calls each.

    python benchmarks/results/stream/insert_points.py
"""

from __future__ import annotations

import sys
import tempfile
import timeit
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the checkout

from sqlalchemy import Table, insert, text
from sqlalchemy.orm import Session

from service.db import Database, upgrade_schema
from service.tables import StreamPoint


def main() -> None:
    db = Database(f"sqlite:///{tempfile.mkdtemp()}/bench.db")
    upgrade_schema(db)
    now = datetime.now(UTC)
    rows = [
        {"model_id": "m", "series": f"h{i}", "ts": now, "values": {"cpu": 0.5, "mem": None}}
        for i in range(200)
    ]

    def session() -> Session:
        s = db.session()
        s.execute(text("PRAGMA foreign_keys=OFF"))  # no model row needed; rolled back anyway
        return s

    def orm() -> None:
        with session() as s:
            s.execute(insert(StreamPoint), rows)
            s.rollback()

    def core() -> None:
        with session() as s:
            s.execute(insert(cast(Table, StreamPoint.__table__)), rows)
            s.rollback()

    for name, call in (("orm", orm), ("core", core), ("orm", orm), ("core", core)):
        print(f"{name}: {timeit.timeit(call, number=50) / 50 * 1e3:.2f} ms for 200 rows")


if __name__ == "__main__":
    main()
