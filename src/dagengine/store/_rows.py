"""A stored run read back section by section, for `dagengine runs export`, without loading it.

One cursor per dimension walks its results in section order (the results table's primary
key is (process_id, dimension, section_index), so no sort is needed) and a merge puts each
section's results together; sections come from their stored chunks, a thousand at a time.
Everything is read in one read transaction, so repeated passes (the export makes two:
columns, then values) see the same run even while another process is still writing it.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from .._table import Row
from ..types import DimensionResult, Section
from ._codec import SECTIONS_PER_ROW, result_from_json


class StoredRows:
    """The rows of one stored run: (section index, section or None, results by dimension).

    Rows follow the stored section indexes; the section is from the final list (the
    transformed one, if a transform changed it and the run finished), None past its end.
    """

    def __init__(self, path: Path, process_id: str, dimensions: list[str]) -> None:
        self.process_id = process_id
        self.dimensions = dimensions  # section dimensions, in plan order
        # as_uri() percent-encodes what a URI would misread in a path (?, #, %).
        self._conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                     timeout=30)
        self._conn.execute("BEGIN")  # one snapshot for every pass
        transformed = self._conn.execute(
            "SELECT 1 FROM sections WHERE process_id = ? AND kind = 'transformed' LIMIT 1",
            (process_id,)).fetchone()
        self._kind = "transformed" if transformed else "input"

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> StoredRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Row]:
        sections = self._sections()
        results = heapq.merge(*(self._results(rank, name)
                                for rank, name in enumerate(self.dimensions)))
        upcoming = next(results, None)
        index = 0
        while True:
            section = next(sections, None)
            if section is None and upcoming is None:
                return
            row: dict[str, DimensionResult] = {}
            while upcoming is not None and upcoming[0] == index:
                row[self.dimensions[upcoming[1]]] = result_from_json(upcoming[2])
                upcoming = next(results, None)
            yield index, section, row
            index += 1

    def row(self, index: int) -> Row:
        """One row, by its section index: read alone, not walked to."""
        found = self._conn.execute(
            "SELECT sections FROM sections WHERE process_id = ? AND kind = ? AND chunk = ?",
            (self.process_id, self._kind, index // SECTIONS_PER_ROW)).fetchone()
        section = None
        if found is not None:
            pairs = json.loads(found[0])
            if index % SECTIONS_PER_ROW < len(pairs):
                content, metadata = pairs[index % SECTIONS_PER_ROW]
                section = Section(content=content, metadata=metadata)
        stored = dict(self._conn.execute(
            "SELECT dimension, result FROM results WHERE process_id = ? AND section_index = ?",
            (self.process_id, index)).fetchall())
        row = {name: result_from_json(stored[name]) for name in self.dimensions
               if name in stored}
        return index, section, row

    def _sections(self) -> Iterator[Section]:
        cursor = self._conn.execute(
            "SELECT sections FROM sections WHERE process_id = ? AND kind = ? ORDER BY chunk",
            (self.process_id, self._kind))
        for (text,) in cursor:
            for content, metadata in json.loads(text):
                yield Section(content=content, metadata=metadata)

    def _results(self, rank: int, dimension: str) -> Iterator[tuple[int, int, str]]:
        cursor = self._conn.execute(
            "SELECT section_index, result FROM results WHERE process_id = ? AND dimension = ? "
            "AND section_index >= 0 ORDER BY section_index", (self.process_id, dimension))
        for index, text in cursor:
            yield index, rank, text
