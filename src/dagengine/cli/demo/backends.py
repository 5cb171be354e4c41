"""Where the calls go: the simulator or the real API, through which gateway, if any."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ...gateway import PORTKEY_GATEWAY_VERSION, GatewayError, LocalGateway, node_available
from ...gateway._install import gateway_installed
from ...providers.portkey import HOSTED_GATEWAY_URL
from ...simulator import SimulatorProcess
from .options import DemoOptions
from .settings import (
    EXECUTION,
    GATEWAY_CONFIG,
    LATENCY_MEDIAN,
    LATENCY_SIGMA,
    RETRY_ON,
    Backend,
)

__all__ = ["Setup"]


@dataclass(slots=True)
class Setup:
    """Where the calls go, as the report describes it."""

    backend: Backend
    provider: dict[str, Any]  # the "anthropic" provider config
    backend_line: str
    gateway_line: str
    retry_line: str
    limits_line: str | None = None
    gateway: Literal["local", "hosted"] | None = None
    gateway_log: Path | None = None
    simulator: SimulatorProcess | None = None


@contextlib.asynccontextmanager
async def _open_setup(options: DemoOptions) -> AsyncIterator[Setup]:
    """Start what the run needs (simulator, gateway) and stop all of it afterwards."""
    async with contextlib.AsyncExitStack() as stack:
        backend = options.chosen_backend
        if backend == "simulator":
            median = LATENCY_MEDIAN * options.latency_scale
            simulator = await stack.enter_async_context(SimulatorProcess(
                latency_median=median, latency_sigma=LATENCY_SIGMA,
                requests_per_minute=options.requests_per_minute, seed=options.seed,
                batch_delay=options.batch_delay * options.latency_scale))
            burst = max(1, math.floor(options.requests_per_minute / 60))
            setup = Setup(
                backend=backend,
                provider={"api_key": "simulated", "base_url": simulator.base_url},
                backend_line="local LLM simulator (simulated figures)",
                limits_line=(f"{options.requests_per_minute:,.0f} requests/min (bursts of "
                             f"{burst}), latency median {median:.2f}s (simulated)"),
                gateway_line="", retry_line="", simulator=simulator,
            )
        else:
            setup = Setup(
                backend=backend,
                provider={"api_key": os.environ.get("ANTHROPIC_API_KEY", "")},
                backend_line="Anthropic API (real calls, real cost)",
                gateway_line="", retry_line="",
            )
        await _route(stack, options, setup)
        yield setup


async def _route(stack: contextlib.AsyncExitStack, options: DemoOptions, setup: Setup) -> None:
    """Through which gateway, if any, the calls go; fills in the setup's gateway lines."""
    reason = None
    if options.mode == "batch":
        setup.gateway_line = ("none (batch mode: batches go to the provider's own batch API, "
                              "at half the online price)")
        setup.retry_line = (f"Items that fail in a batch are retried in the next batch, up to "
                            f"{EXECUTION['max_retries']} times")
        return
    if not options.gateway:
        reason = "--no-gateway"
    elif options.gateway_url is not None:
        _use_gateway(setup, "local", options.gateway_url,
                     f"Portkey with smart retries (local gateway at {options.gateway_url})")
        return
    elif setup.backend == "anthropic" and os.environ.get("PORTKEY_API_KEY"):
        _use_gateway(setup, "hosted", None,
                     f"Portkey with smart retries (hosted, {HOSTED_GATEWAY_URL})")
        return
    elif not node_available():
        reason = "Node.js is not installed, so the open-source Portkey gateway cannot run"
    else:
        log_path = _gateway_log_path()
        try:
            gateway = await stack.enter_async_context(LocalGateway(log_path=log_path))
        except GatewayError as exc:
            reason = f"the local Portkey gateway did not start: {str(exc).splitlines()[0]}"
        else:
            _use_gateway(setup, "local", gateway.url,
                         f"Portkey with smart retries (open-source gateway "
                         f"{PORTKEY_GATEWAY_VERSION} on 127.0.0.1:{gateway.port})")
            setup.gateway_log = log_path
            return
    setup.gateway_line = f"none ({reason}): the engine retries 429s and 5xx itself"
    setup.retry_line = (f"Up to {EXECUTION['max_retries']} retries per email in the engine, "
                        f"{EXECUTION['retry_delay']:g}s backoff doubling, honouring "
                        f"retry-after")


def _use_gateway(setup: Setup, kind: Literal["local", "hosted"], url: str | None,
                 line: str) -> None:
    setup.gateway = kind
    setup.provider.update(gateway="portkey", gateway_config=GATEWAY_CONFIG)
    if url is not None:
        setup.provider["gateway_url"] = url
    setup.gateway_line = line
    attempts = GATEWAY_CONFIG["retry"]["attempts"]
    setup.retry_line = (f"Up to {attempts} attempts on errors "
                        f"({', '.join(map(str, RETRY_ON))}), in the gateway")


def _gateway_expected(options: DemoOptions) -> Literal["given", "hosted", "local"] | None:
    """The gateway `_route` will likely use (a local one may still fail to start)."""
    if not options.gateway or options.mode == "batch":
        return None
    if options.gateway_url is not None:
        return "given"
    if options.chosen_backend == "anthropic" and os.environ.get("PORTKEY_API_KEY"):
        return "hosted"
    return "local" if node_available() else None


def _starting_line(options: DemoOptions) -> str | None:
    """What the set-up is about to start, said before it takes its seconds."""
    parts = []
    if options.chosen_backend == "simulator":
        parts.append("the local LLM simulator")
    if _gateway_expected(options) == "local":
        gateway = "the local Portkey gateway"
        if not gateway_installed():
            gateway += " (installing it from npm first: about a minute, once)"
        parts.append(gateway)
    if not parts:
        return None
    return f"🔧 Starting {' and '.join(parts)}..."


def _gateway_log_path() -> Path:
    """One log per user, overwritten by each run, so the report can say where it is."""
    path = Path(tempfile.gettempdir()) / f"dagengine-demo-{os.getuid()}" / "portkey-gateway.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path
