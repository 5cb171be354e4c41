"""`python -m dagengine.simulator` (and `dagengine simulate`): serve until Ctrl-C or SIGTERM.

Flags are derived from SimulatorConfig's fields: `--error-429-rate` sets `error_429_rate`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
from collections.abc import Callable
from typing import Any

from ..errors import ValidationError
from ._config import LATENCY_DRAWS, SimulatorConfig, parse_script
from ._server import Simulator

DEFAULT_PORT = 8787
READY_LINE = "dagengine simulator listening on {url} (simulated)"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_to_argv(config: SimulatorConfig) -> list[str]:
    """The flags that reproduce `config` (fields left at their default are omitted)."""
    argv: list[str] = []
    for field in dataclasses.fields(SimulatorConfig):
        value = getattr(config, field.name)
        if value == field.default:
            continue
        if field.name == "script":
            text = ",".join(map(str, value))
        elif field.name == "key_limits":
            text = json.dumps(value)
        else:
            text = str(value)
        argv += [flag(field.name), text]
    return argv


def build_parser(prog: str = "python -m dagengine.simulator") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Serve simulated Anthropic Messages, OpenAI Chat Completions and Gemini "
            "generateContent APIs, and their batch APIs, on 127.0.0.1. Every answer is "
            "labelled x-simulated: true."
        ),
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"0 picks a free port (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--watch-stdin",
        action="store_true",
        help="exit when stdin closes, so a child simulator never outlives its parent",
    )
    options = parser.add_argument_group("simulation (see SimulatorConfig)")
    for field in dataclasses.fields(SimulatorConfig):
        options.add_argument(
            flag(field.name),
            *field.metadata["aliases"],
            dest=field.name,
            metavar=_metavar(field.name),
            type=_ARG_TYPES[str(field.type)],
            default=argparse.SUPPRESS,
            help=f"{field.metadata['help']} (default: {_show_default(field.default)})",
        )
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m dagengine.simulator") -> int:
    """Run the simulator until interrupted; returns the process exit code."""
    parser = build_parser(prog)
    args = vars(parser.parse_args(argv))
    port, watch_stdin = args.pop("port"), args.pop("watch_stdin")
    try:
        config = SimulatorConfig().replace(args)
    except ValidationError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(serve(config, port, watch_stdin=watch_stdin))
    except OSError as exc:
        print(f"dagengine simulator: cannot listen on 127.0.0.1:{port}: {exc}", file=sys.stderr)
        return 1
    return 0


async def serve(config: SimulatorConfig, port: int, *, watch_stdin: bool = False) -> None:
    """Serve until SIGINT/SIGTERM (or, with watch_stdin, until stdin reaches EOF)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows' default loop
            loop.add_signal_handler(signum, stop.set)
    async with Simulator(config, port=port) as sim, asyncio.TaskGroup() as tasks:
        print(READY_LINE.format(url=sim.base_url), flush=True)
        watcher = tasks.create_task(_stop_when_stdin_closes(stop)) if watch_stdin else None
        await stop.wait()
        if watcher is not None:
            watcher.cancel()


async def _stop_when_stdin_closes(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while await reader.read(4096):
            pass
    finally:
        transport.close()
    stop.set()


def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "") else float(text)


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "") else int(text)


def _bool(text: str) -> bool:
    value = text.lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _optional_str(text: str) -> str | None:
    return text or None


def _script(text: str) -> Any:
    try:
        return parse_script(text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _key_limits(text: str) -> Any:
    if text.lower() in ("none", ""):
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            'expected a JSON object, e.g. {"key-a": {"requests_per_minute": 60}}'
        ) from None


def _latency_draw(text: str) -> str:
    if text not in LATENCY_DRAWS:
        raise argparse.ArgumentTypeError(f"expected {' or '.join(LATENCY_DRAWS)}, got {text!r}")
    return text


def _metavar(name: str) -> str:
    if name == "key_limits":
        return "JSON"
    if name == "latency_draw":
        return "|".join(LATENCY_DRAWS).upper()
    if name.endswith("_rate"):
        return "P"
    if name == "script":
        return "STEPS"
    if name == "api_key":
        return "KEY"
    if name == "latency_sigma":
        return "SIGMA"
    if name.startswith("cache_"):
        return "TOKENS"
    if name == "batch_max_bytes":
        return "BYTES"
    if name == "rate_limit_headers":
        return "BOOL"
    counts = ("seed", "requests_per_minute", "tokens_per_minute", "batch_max_requests",
              "max_faults_per_prompt")
    return "N" if name in counts else "SECONDS"


def _show_default(value: object) -> str:
    return "none" if value in (None, ()) else str(value)


_ARG_TYPES: dict[str, Callable[[str], Any]] = {
    "float": float,
    "int": int,
    "bool": _bool,
    "float | None": _optional_float,
    "int | None": _optional_int,
    "str | None": _optional_str,
    "tuple[ScriptStep, ...]": _script,
    "KeyLimitsConfig | None": _key_limits,
    "Literal['prompt', 'request']": _latency_draw,
}
