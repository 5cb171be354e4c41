"""Results as a table: one row per section, columns for the section and for each dimension.

The same rows feed `ProcessResult.to_pandas()` / `to_polars()` and `dagengine runs export`
(JSON Lines, CSV, Parquet), so a run reads the same in a notebook and in a file:

    section.index  section.content  section.<metadata key> (sorted)  ...
    <dim>.<field> ... (one per key of dict data)  <dim> (data that is not a dict)
    <dim>.error  <dim>.cost

Dict data is flattened one level; deeper values stay as they are (JSON text in CSV and
Parquet). A data field or metadata key named like a column the engine writes (`error`,
`cost`; `index`, `content`) goes under `<dim>.data.<field>` / `section.metadata.<key>`.
Global dimensions have no row: they are in `ProcessResult.global_results`.

Columns come from a first pass over all rows (`LayoutBuilder`), values from a second, so a
store export streams: neither pass holds more than one row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import MissingExtraError


# What the table reads of the data model (types.py), named here so that types.py may use this
# module without an import circle.
class Section(Protocol):
    @property
    def content(self) -> str: ...
    @property
    def metadata(self) -> dict[str, Any]: ...


class DimensionResult(Protocol):
    @property
    def data(self) -> Any: ...
    @property
    def error(self) -> str | None: ...
    @property
    def metadata(self) -> dict[str, Any]: ...


class _SectionResult(Protocol):
    @property
    def section(self) -> Section: ...
    @property
    def results(self) -> Mapping[str, DimensionResult]: ...


class ProcessResult(Protocol):
    @property
    def sections(self) -> Sequence[_SectionResult]: ...

SECTION_FIELDS = ("index", "content")
RESULT_FIELDS = ("error", "cost")

Row = tuple[int, Section | None, Mapping[str, DimensionResult]]


@dataclass(slots=True)
class _Kinds:
    """Which kinds of value one column holds: decides its Parquet type."""

    seen: set[str] = field(default_factory=set)

    def add(self, value: Any) -> None:
        if value is not None:
            self.seen.add(_kind(value))

    def parquet_kind(self) -> str:
        """bool, int, float or str (everything else is written as JSON text)."""
        if self.seen in ({"bool"}, {"int"}, {"float"}):
            return next(iter(self.seen))
        if self.seen == {"int", "float"}:
            return "float"
        return "str"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "json"


@dataclass(slots=True)
class _DimensionColumns:
    name: str
    fields: dict[str, _Kinds] = field(default_factory=dict)  # keys of dict data, first seen
    bare: _Kinds | None = None  # set once some data is neither a dict nor None


@dataclass(slots=True)
class Column:
    name: str
    kind: str  # bool | int | float | str, as Parquet stores it


class Layout:
    """The columns of a run's table, and each row's values in column order."""

    def __init__(self, metadata: Mapping[str, _Kinds],
                 dimensions: Iterable[_DimensionColumns]) -> None:
        self._metadata = list(metadata)
        self._dimensions = list(dimensions)
        taken: set[str] = set()
        columns = [Column(_unique("section.index", taken), "int"),
                   Column(_unique("section.content", taken), "str")]
        columns += [Column(_unique(_section_column(key), taken), kinds.parquet_kind())
                    for key, kinds in metadata.items()]
        for dim in self._dimensions:
            if dim.bare is not None:
                columns.append(Column(_unique(dim.name, taken), dim.bare.parquet_kind()))
            columns += [Column(_unique(_field_column(dim.name, key), taken), kinds.parquet_kind())
                        for key, kinds in dim.fields.items()]
            columns.append(Column(_unique(f"{dim.name}.error", taken), "str"))
            columns.append(Column(_unique(f"{dim.name}.cost", taken), "float"))
        self.columns = columns

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def values(self, index: int, section: Section | None,
               results: Mapping[str, DimensionResult]) -> list[Any]:
        metadata = section.metadata if section is not None else {}
        row: list[Any] = [index, section.content if section is not None else None]
        row += [metadata.get(key) for key in self._metadata]
        for dim in self._dimensions:
            result = results.get(dim.name)
            data = result.data if result is not None else None
            if dim.bare is not None:
                row.append(None if isinstance(data, dict) else data)
            mapping = data if isinstance(data, dict) else {}
            row += [mapping.get(key) for key in dim.fields]
            row.append(result.error if result is not None else None)
            row.append(_cost(result))
        return row

    def record(self, index: int, section: Section | None,
               results: Mapping[str, DimensionResult]) -> dict[str, Any]:
        return dict(zip(self.names, self.values(index, section, results), strict=True))


class LayoutBuilder:
    """Collects the columns over a first pass: section metadata keys sorted, data fields in
    the order they first appear, dimensions in the order the results list them."""

    def __init__(self, dimensions: Iterable[str] = ()) -> None:
        self._metadata: dict[str, _Kinds] = {}
        self._dimensions: dict[str, _DimensionColumns] = {}
        self._order: list[str] = list(dimensions)

    def add(self, section: Section | None, results: Mapping[str, DimensionResult]) -> None:
        if section is not None:
            for key, value in section.metadata.items():
                self._metadata.setdefault(key, _Kinds()).add(value)
        previous: str | None = None
        for name, result in results.items():
            self._place(name, previous)
            previous = name
            dim = self._dimensions.setdefault(name, _DimensionColumns(name))
            data = result.data
            if isinstance(data, dict):
                for key, value in data.items():
                    dim.fields.setdefault(str(key), _Kinds()).add(value)
            elif data is not None:
                if dim.bare is None:
                    dim.bare = _Kinds()
                dim.bare.add(data)

    def _place(self, name: str, previous: str | None) -> None:
        """Keep dimensions in plan order even when the first rows lack some of them: a new
        name goes right after the one before it in this row's (plan-ordered) results."""
        if name in self._order:
            return
        at = self._order.index(previous) + 1 if previous in self._order else 0
        self._order.insert(at, name)

    def layout(self) -> Layout:
        dims = [self._dimensions.get(name) or _DimensionColumns(name) for name in self._order]
        # Sorted: the store keeps section metadata as canonical JSON, whose keys are sorted.
        return Layout(dict(sorted(self._metadata.items())), dims)


def _cost(result: DimensionResult | None) -> float | None:
    if result is None:
        return None
    cost = result.metadata.get("cost")
    return float(cost) if isinstance(cost, (int, float)) else 0.0


def _section_column(key: str) -> str:
    return f"section.metadata.{key}" if key in SECTION_FIELDS else f"section.{key}"


def _field_column(dimension: str, key: str) -> str:
    return f"{dimension}.data.{key}" if key in RESULT_FIELDS else f"{dimension}.{key}"


def _unique(name: str, taken: set[str]) -> str:
    """A column name nothing else took (a dimension called `section` could collide)."""
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}#{n}", n + 1
    taken.add(candidate)
    return candidate


def cell_text(value: Any) -> str:
    """A value as CSV (and mixed Parquet columns) hold it: text as is, the rest as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


# -- a ProcessResult as rows -------------------------------------------------------------------


def result_rows(result: ProcessResult) -> Iterator[Row]:
    for index, section_result in enumerate(result.sections):
        yield index, section_result.section, section_result.results


def layout_of(rows: Iterable[Row], dimensions: Iterable[str] = ()) -> Layout:
    builder = LayoutBuilder(dimensions)
    for _, section, results in rows:
        builder.add(section, results)
    return builder.layout()


def columns_of(result: ProcessResult) -> tuple[list[str], list[list[Any]]]:
    """Column names and, per column, its values over the result's sections."""
    layout = layout_of(result_rows(result))
    columns: list[list[Any]] = [[] for _ in layout.columns]
    for index, section, results in result_rows(result):
        for column, value in zip(columns, layout.values(index, section, results), strict=True):
            column.append(value)
    return layout.names, columns


def to_pandas(result: ProcessResult) -> Any:
    pandas = _require("pandas", "pandas")
    names, columns = columns_of(result)
    return pandas.DataFrame(dict(zip(names, columns, strict=True)), columns=names)


def to_polars(result: ProcessResult) -> Any:
    polars = _require("polars", "polars")
    names, columns = columns_of(result)
    return polars.DataFrame([_polars_series(polars, name, values)
                             for name, values in zip(names, columns, strict=True)])


def _polars_series(polars: Any, name: str, values: list[Any]) -> Any:
    try:
        return polars.Series(name, values, strict=False)
    except Exception:  # values polars cannot unify (e.g. lists of dicts of varying shapes)
        return polars.Series(name, [None if v is None else cell_text(v) for v in values])


def _require(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module, extra) from exc
