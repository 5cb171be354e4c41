"""The public API is exactly what `dagengine/__init__.py` imports, listed once in __all__."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import dagengine

INCLUDED_PRIVATE_MEMBERS = ["__version__"]


def test_all_lists_every_public_name_of_the_package_sorted() -> None:
    public = [name for name, value in vars(dagengine).items()
              if not isinstance(value, ModuleType)  # submodules are reached by path
              and (not name.startswith("_") or name in INCLUDED_PRIVATE_MEMBERS)]

    assert dagengine.__all__ == sorted(public, key=lambda name: (name.startswith("_"),
                                                                  name.casefold()))


def test_every_exported_name_is_defined_in_a_module_of_the_package() -> None:
    foreign = [name for name in dagengine.__all__ if name not in INCLUDED_PRIVATE_MEMBERS
               and not getattr(dagengine, name).__module__.startswith("dagengine.")]

    assert not foreign, f"exported but defined outside dagengine: {foreign}"


def test_importing_the_package_loads_none_of_the_tools() -> None:
    """`import dagengine` is the core: the CLI, demo, gateway runner, simulator and test
    doubles load only when asked for."""
    code = "import sys, dagengine; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()

    tools = [name for name in loaded if name.split(".")[:2] in (
        ["dagengine", "cli"], ["dagengine", "gateway"], ["dagengine", "simulator"],
        ["dagengine", "testing"])]
    assert "dagengine.engine" in loaded and not tools
