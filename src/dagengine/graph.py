"""The plan: dimensions, their dependencies in checked order, analytics and exports."""

from __future__ import annotations

import graphlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .errors import (
    CircularDependencyError,
    ConfigurationError,
    DependencyError,
    ValidationError,
)
from .types import Dimension


def normalize_dimensions(items: Sequence[str | Dimension]) -> dict[str, Dimension]:
    """Dimensions by name, in declaration order; a plain string is a section dimension."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise ValidationError("plugin.dimensions", "a list of dimension names or Dimensions, "
                              "e.g. ['summary']", items)
    if not items:
        raise ConfigurationError(
            "the plugin defines no dimensions: set self.dimensions = ['summary', ...] in its "
            "__init__ (a name, or Dimension(name, scope='global') for one over all sections)"
        )
    dims: dict[str, Dimension] = {}
    for item in items:
        dim = Dimension(name=item) if isinstance(item, str) else item
        if not isinstance(dim, Dimension):
            raise ConfigurationError(
                f"plugin.dimensions entries must be str or Dimension, got {type(item).__name__}"
            )
        if not dim.name:
            raise ConfigurationError("plugin.dimensions has a dimension with an empty name")
        if dim.name in dims:
            raise ConfigurationError(f"plugin.dimensions names {dim.name!r} twice")
        if dim.transform is not None and not dim.is_global:
            raise ConfigurationError(
                f"dimension {dim.name!r} has a transform but scope='section'; "
                "only global dimensions can transform the section list"
            )
        dims[dim.name] = dim
    return dims


@dataclass(frozen=True)
class Plan:
    """A checked dimension graph. `order` is a topological order, stable in declaration order."""

    dimensions: dict[str, Dimension]
    dependencies: dict[str, tuple[str, ...]]
    order: tuple[str, ...]

    @classmethod
    def build(
        cls, dimensions: Sequence[str | Dimension], dependencies: Mapping[str, Sequence[str]]
    ) -> Plan:
        """Check the graph and order it; raises before any call on unknown names or cycles."""
        dims = normalize_dimensions(dimensions)
        if not isinstance(dependencies, Mapping):
            raise DependencyError(
                "define_dependencies() must return a dict of dimension -> [dependencies], "
                f"got {type(dependencies).__name__}"
            )
        deps: dict[str, tuple[str, ...]] = {name: () for name in dims}
        for name, needed in dependencies.items():
            if name not in dims:
                raise DependencyError(
                    f"dependencies are declared for unknown dimension {name!r}; "
                    f"dimensions are {', '.join(dims) or 'none'}"
                )
            if isinstance(needed, str):
                needed = [needed]
            for dep in needed:
                if dep == name:
                    raise DependencyError(f"dimension {name!r} depends on itself")
                if dep not in dims:
                    raise DependencyError(
                        f"dimension {name!r} depends on unknown dimension {dep!r}; "
                        f"dimensions are {', '.join(dims)}"
                    )
            deps[name] = tuple(dict.fromkeys(needed))
        sorter = graphlib.TopologicalSorter(deps)
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            raise CircularDependencyError(_cycle_in_dependency_order(exc.args[1])) from None
        position = {name: i for i, name in enumerate(dims)}
        order: list[str] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=position.__getitem__)
            order.extend(ready)
            sorter.done(*ready)
        return cls(dims, deps, tuple(order))

    @cached_property
    def dependents(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {name: [] for name in self.order}
        for name in self.order:
            for dep in self.dependencies[name]:
                out[dep].append(name)
        return {name: tuple(v) for name, v in out.items()}

    @cached_property
    def levels(self) -> dict[str, int]:
        """0 for dimensions with no dependencies, else 1 + the deepest dependency."""
        level: dict[str, int] = {}
        for name in self.order:
            level[name] = 1 + max((level[d] for d in self.dependencies[name]), default=-1)
        return level

    @cached_property
    def remaining_depth(self) -> dict[str, int]:
        """Length of the longest chain from a dimension to the end, itself included."""
        depth: dict[str, int] = {}
        for name in reversed(self.order):
            depth[name] = 1 + max((depth[d] for d in self.dependents[name]), default=0)
        return depth

    def is_global(self, name: str) -> bool:
        return self.dimensions[name].is_global

    def parallel_groups(self) -> list[list[str]]:
        groups: list[list[str]] = []
        for name in self.order:
            lvl = self.levels[name]
            while len(groups) <= lvl:
                groups.append([])
            groups[lvl].append(name)
        return groups

    def critical_path(self) -> list[str]:
        if not self.order:
            return []
        start = max(self.order, key=lambda n: (self.remaining_depth[n], -self.order.index(n)))
        path = [start]
        while self.dependents[path[-1]]:
            path.append(max(self.dependents[path[-1]], key=self.remaining_depth.__getitem__))
        return path

    def analytics(self) -> dict[str, Any]:
        transitive = {name: self._downstream(name) for name in self.order}
        bottlenecks = sorted(
            (n for n in self.order if len(self.dependents[n]) >= 2),
            key=lambda n: -len(transitive[n]),
        )
        return {
            "total_dimensions": len(self.order),
            "total_dependencies": sum(len(d) for d in self.dependencies.values()),
            "max_depth": max(self.levels.values(), default=-1) + 1,
            "critical_path": self.critical_path(),
            "parallel_groups": self.parallel_groups(),
            "independent_dimensions": [
                n for n in self.order if not self.dependencies[n] and not self.dependents[n]
            ],
            "bottlenecks": bottlenecks,
            "global_dimensions": [n for n in self.order if self.is_global(n)],
        }

    def _downstream(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.dependents[name])
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(self.dependents[node])
        return seen

    def to_dot(self, title: str = "dagengine") -> str:
        lines = [f"digraph {json.dumps(title)} {{", "  rankdir=LR;"]
        for name in self.order:
            shape = "box" if self.is_global(name) else "ellipse"
            label = f"{name}\\n(global)" if self.is_global(name) else name
            lines.append(f'  {json.dumps(name)} [shape={shape}, label="{label}"];')
        for name in self.order:
            for dep in self.dependencies[name]:
                lines.append(f"  {json.dumps(dep)} -> {json.dumps(name)};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": [
                {"id": n, "scope": self.dimensions[n].scope, "level": self.levels[n]}
                for n in self.order
            ],
            "links": [
                {"source": dep, "target": n} for n in self.order for dep in self.dependencies[n]
            ],
        }

    def signature(self) -> dict[str, Any]:
        """What identifies this graph when a stored run is resumed."""
        return {
            "dimensions": [[n, self.dimensions[n].scope] for n in self.order],
            "dependencies": {n: list(self.dependencies[n]) for n in self.order},
        }


def _cycle_in_dependency_order(nodes: Sequence[str]) -> list[str]:
    # graphlib lists the cycle in data-flow order; reversed it reads "a depends on b".
    return list(reversed(list(nodes)))
