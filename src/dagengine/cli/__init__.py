"""`dagengine`: the command line.

    dagengine demo [--emails N] [--backend simulator|anthropic] ...   the walkthrough
    dagengine simulate [--rpm 600] ...                                 the LLM API simulator
    dagengine graph module:PluginClass | path/to/file.py:PluginClass   a plugin's DAG
    dagengine estimate module:PluginClass sections.jsonl               a run's cost, beforehand
    dagengine runs list|show|export|report ...                         stored runs

Exit codes: 0 success, 1 the command ran and failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from .._version import __version__
from ..errors import DagEngineError
from ..plugin import Plugin

__all__ = ["UsageError", "build_parser", "graph_report", "load_plugin_class", "main"]

PROG = "dagengine"


class UsageError(Exception):
    """The command line asks for something that cannot be done as asked (exit code 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run `dagengine ...`; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    # These own their flags: everything after the command name is theirs, --help included.
    if args and args[0] in _DELEGATED:
        return _DELEGATED[args[0]](args[1:])
    parser = build_parser()
    try:
        parsed = parser.parse_args(args)
    except SystemExit as exc:
        return _exit_code(exc)
    if parsed.command == "graph":
        return _graph(parsed.target, as_json=parsed.json)
    if parsed.command == "estimate":
        return _estimate(parsed)
    parser.print_usage(sys.stderr)
    print(f"{PROG}: error: name a command: demo, simulate, graph, estimate or runs "
          f"(`{PROG} --help` says more)", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run LLM workloads as a DAG. Start with `dagengine demo`.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in (
        ("demo", "the Portkey parallel-requests walkthrough: 100 emails, 100 concurrent "
                 "requests, live progress and a cost report (on the local simulator unless "
                 "ANTHROPIC_API_KEY is set)"),
        ("simulate", "serve the local LLM API simulator (Anthropic, OpenAI and Gemini "
                     "wire formats) on 127.0.0.1"),
        ("runs", "list, show, export and report runs kept in a store"),
    ):
        commands.add_parser(name, help=f"{text}; `{PROG} {name} --help` for its options",
                            add_help=False)
    graph = commands.add_parser(
        "graph", help="print a plugin's dimension graph (DOT) and its analytics",
        description="Print the DOT graph of a plugin's dimensions, then its analytics as DOT "
                    "comments (the output stays valid DOT). The plugin class is constructed "
                    "with no arguments.",
    )
    graph.add_argument("target", metavar="module:PluginClass",
                       help="an importable module or a path/to/file.py, a colon, and the "
                            "Plugin subclass")
    graph.add_argument("--json", action="store_true",
                       help="print {'graph': nodes and links, 'analytics': ...} as JSON instead")
    _add_estimate_parser(commands)
    return parser


# -- graph -----------------------------------------------------------------------------------


def _graph(target: str, *, as_json: bool) -> int:
    try:
        cls = load_plugin_class(target)
    except UsageError as exc:
        print(f"{PROG} graph: error: {exc}", file=sys.stderr)
        return 2
    try:
        plugin = cls()
    except TypeError as exc:
        print(f"{PROG} graph: error: {target} must be constructible with no arguments "
              f"({exc})", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"{PROG} graph: error: {cls.__name__}() raised {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    try:
        text = graph_report(plugin, as_json=as_json)
    except DagEngineError as exc:
        print(f"{PROG} graph: error: {exc}", file=sys.stderr)
        return 1
    print(text, end="")
    return 0


def graph_report(plugin: Plugin, *, as_json: bool = False) -> str:
    """The plugin's DOT graph followed by its analytics as `//` comments, or both as JSON."""
    from ..engine import DagEngine

    engine = DagEngine(plugin=plugin)
    analytics = engine.get_graph_analytics()
    if as_json:
        data = {"graph": engine.export_graph_json(), "analytics": analytics}
        return json.dumps(data, indent=2) + "\n"
    lines = [engine.export_graph_dot().rstrip("\n"), "", "// Graph analytics"]
    width = max(map(len, analytics), default=0)
    for key, value in analytics.items():
        lines.append(f"// {key.ljust(width)}  {_show(key, value)}")
    return "\n".join(lines) + "\n"


def _show(key: str, value: Any) -> str:
    if key == "critical_path":
        return " -> ".join(value) or "(none)"
    if key == "parallel_groups":
        return " then ".join("[" + ", ".join(group) + "]" for group in value) or "(none)"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "(none)"
    return str(value)


def load_plugin_class(target: str) -> type[Plugin]:
    """`pkg.module:PluginClass` or `path/to/file.py:PluginClass` -> the class."""
    source, colon, name = target.rpartition(":")
    if not colon or not source or not name:
        raise UsageError(
            f"expected module:PluginClass or path/to/file.py:PluginClass, got {target!r}"
        )
    module = _load_file(Path(source)) if _is_path(source) else _import(source)
    found = getattr(module, name, None)
    if found is None:
        plugins = sorted(
            attr for attr, value in vars(module).items()
            if inspect.isclass(value) and issubclass(value, Plugin) and value is not Plugin
        )
        known = f"; Plugin classes there: {', '.join(plugins)}" if plugins else ""
        raise UsageError(f"{source} has no {name!r}{known}")
    if not (inspect.isclass(found) and issubclass(found, Plugin)):
        raise UsageError(f"{target} is not a dagengine.Plugin subclass "
                         f"(it is {type(found).__name__} {found!r})")
    return found


def _is_path(source: str) -> bool:
    return source.endswith(".py") or "/" in source or os.sep in source


def _load_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    # Its directory goes first on sys.path, as for `python path/to/file.py`, so the file's
    # own sibling imports work.
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem if path.stem not in sys.modules else f"_dagengine_cli_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise UsageError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _import(name: str) -> ModuleType:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: modules of the current dir
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise UsageError(f"no module named {name!r} (is it installed, or did you mean "
                             f"a path/to/file.py?)") from exc
        raise UsageError(f"importing {name} failed: {exc}") from exc
    except Exception as exc:
        raise UsageError(f"importing {name} failed: {type(exc).__name__}: {exc}") from exc


# -- estimate --------------------------------------------------------------------------------

# Stands in for a missing API key: an estimate makes no call, so it needs none.
_NO_KEY = "unused-by-estimate"


def _add_estimate_parser(commands: Any) -> None:
    estimate = commands.add_parser(
        "estimate", help="calls, tokens, cost and time of a run, before any call",
        description="Estimate what running a plugin over the sections of a JSON Lines file "
                    "would call, cost and take, without calling any provider (no API key "
                    "needed). Each line is a JSON string or an object {\"content\": ..., "
                    "\"metadata\": {...}}. With --store, earlier runs of the plugin in that "
                    "store calibrate the figures. The plugin class is constructed with no "
                    "arguments. JSON options take the JSON itself or @path/to/file.json.",
    )
    estimate.add_argument("target", metavar="module:PluginClass",
                          help="an importable module or a path/to/file.py, a colon, and the "
                               "Plugin subclass")
    estimate.add_argument("sections", metavar="sections.jsonl",
                          help="the sections, one JSON value a line ('-' reads standard input)")
    estimate.add_argument("--providers", metavar="JSON",
                          help="provider configs as DagEngine(providers=...) takes them, e.g. "
                               "'{\"anthropic\": {\"max_tokens\": 512}}' (default: the "
                               "built-ins anthropic, openai and gemini)")
    estimate.add_argument("--execution", metavar="JSON",
                          help="ExecutionConfig fields, e.g. '{\"concurrency\": 50, "
                               "\"rate_limits\": {...}}'")
    estimate.add_argument("--pricing", metavar="JSON",
                          help="prices as DagEngine(pricing=...) takes them")
    estimate.add_argument("--store", metavar="runs.db", type=Path,
                          help="a run store whose earlier runs of the plugin calibrate the "
                               "estimate")
    estimate.add_argument("--json", action="store_true",
                          help="print the Estimate as JSON instead of a table")


def _estimate(args: argparse.Namespace) -> int:
    """`dagengine estimate`: 0 printed, 1 the plugin or its configuration failed, 2 usage."""
    prog = f"{PROG} estimate"
    try:
        cls = load_plugin_class(args.target)
        sections = _read_sections(args.sections)
        providers = _json_option(args.providers, "--providers")
        execution = _json_option(args.execution, "--execution")
        pricing = _json_option(args.pricing, "--pricing")
        if args.store is not None and not args.store.is_file():
            raise UsageError(f"--store: no run store at {args.store}")
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    try:
        plugin = cls()
    except Exception as exc:
        print(f"{prog}: error: {cls.__name__}() raised {type(exc).__name__}: {exc} (the class "
              "must be constructible with no arguments)", file=sys.stderr)
        return 1
    from ..engine import DagEngine
    from ..errors import UnknownProviderError

    try:
        engine = DagEngine(plugin=plugin, providers=_estimate_providers(providers),
                           execution=execution, pricing=pricing,
                           **({"store": args.store} if args.store is not None else {}))
        estimate = engine.estimate(sections)
    except DagEngineError as exc:
        hint = ""
        if isinstance(exc.__cause__, UnknownProviderError):
            hint = (f" (here: --providers '{{\"{exc.__cause__.name}\": {{\"type\": \"openai\", "
                    f"\"default_model\": ...}}}}' or another built-in type)")
        print(f"{prog}: error: {exc}{hint}", file=sys.stderr)
        return 1
    print(estimate.model_dump_json(indent=2) if args.json else estimate.table(), end="\n"
          if args.json else "")
    return 0


def _read_sections(source: str) -> list[Any]:
    if source == "-":
        lines = sys.stdin.read().splitlines()
    else:
        path = Path(source)
        if not path.is_file():
            raise UsageError(f"no such file: {path}")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from exc
    sections = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            sections.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UsageError(f"{source} line {number} is not JSON ({exc.msg}); each line "
                             "holds a JSON string or {\"content\": ..., \"metadata\": ...}"
                             ) from None
    return sections


def _json_option(value: str | None, flag: str) -> Any:
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{flag}: cannot read {value[1:]}: {exc}") from exc
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{flag} is not JSON ({exc.msg}): {value[:60]!r}") from None
    if not isinstance(parsed, dict):
        raise UsageError(f"{flag} must be a JSON object, got {type(parsed).__name__}")
    return parsed


def _estimate_providers(configs: dict[str, Any] | None) -> Any:
    """The providers to estimate with: built when the plugin first names one (importing an
    SDK takes seconds), with the key from the config or the environment, else a stand-in
    key, since no call is made."""
    from ..errors import ConfigurationError, MissingAPIKeyError
    from ..providers import BUILTIN_PROVIDERS, ProviderRegistry, build_provider

    known = {name: {} for name in BUILTIN_PROVIDERS} if configs is None else configs
    for name, config in known.items():
        if not isinstance(config, dict):
            raise ConfigurationError(f"--providers: {name!r} must be a config object, got "
                                     f"{json.dumps(config)}")

    class OnDemand(ProviderRegistry):
        def get(self, name: str) -> Any:
            if name in known and not super().has(name):
                try:
                    provider = build_provider(name, known[name])
                except MissingAPIKeyError:
                    provider = build_provider(name, {**known[name], "api_key": _NO_KEY})
                self.register(provider, name)
            return super().get(name)

        def has(self, name: str) -> bool:
            return name in known or super().has(name)

        def list(self) -> list[str]:
            return list(known)

    return OnDemand()


# -- delegated commands ----------------------------------------------------------------------


def _demo(argv: list[str]) -> int:
    from .demo import main as demo_main

    return demo_main(argv, prog=f"{PROG} demo")


def _simulate(argv: list[str]) -> int:
    from ..simulator import main as simulate_main

    try:
        return simulate_main(argv, prog=f"{PROG} simulate")
    except SystemExit as exc:
        return _exit_code(exc)


def _runs(argv: list[str]) -> int:
    from .runs import main as runs_main

    try:
        return runs_main(argv)
    except SystemExit as exc:
        return _exit_code(exc)


_DELEGATED: dict[str, Callable[[list[str]], int]] = {
    "demo": _demo,
    "simulate": _simulate,
    "runs": _runs,
}


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") means: print it, exit 1
    return 1
