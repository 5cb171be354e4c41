"""SimulatorProcess: the simulator in a child process, so it never shares a CPU or an event
loop with the code being measured."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from typing import Any

import aiohttp

from ..errors import ConfigurationError
from ._base import BaseSimulator, merged_config
from ._cli import config_to_argv
from ._config import SimulatorConfig

_READY = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")
_STOP_GRACE = 5.0


class SimulatorProcess(BaseSimulator):
    """`python -m dagengine.simulator` as a child process, driven over HTTP.

    Takes the same options as Simulator. The child watches its stdin, so it exits when this
    object stops it or when the parent process dies.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        port: int = 0,
        python: str = sys.executable,
        startup_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        super().__init__(port)
        self._config = merged_config(config, options)
        self._python = python
        self._startup_timeout = startup_timeout
        self._process: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def config(self) -> SimulatorConfig:
        """The config as last set through this object (the child holds the live one)."""
        return self._config

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def command(self) -> list[str]:
        return [
            self._python, "-m", "dagengine.simulator",
            "--port", str(self._requested_port), "--watch-stdin",
            *config_to_argv(self._config),
        ]  # fmt: skip

    async def start(self) -> None:
        if self._process is not None:
            return
        process = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        try:
            self._port = await self._wait_until_ready(process)
        except BaseException:
            await _end(process)
            raise
        self._process = process
        self._session = aiohttp.ClientSession(base_url=self.base_url)

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        process, self._process = self._process, None
        if process is not None:
            await _end(process)
        self._port = None

    async def stats(self) -> dict[str, Any]:
        async with self._client().get("/stats") as response:
            response.raise_for_status()
            data: dict[str, Any] = await response.json()
            return data

    async def recent_requests(self) -> list[dict[str, Any]]:
        async with self._client().get("/requests") as response:
            response.raise_for_status()
            data: dict[str, Any] = await response.json()
            requests: list[dict[str, Any]] = data["requests"]
            return requests

    async def configure(self, **changes: Any) -> SimulatorConfig:
        self._config.replace(changes)  # fail here, with the same message, before any I/O
        async with self._client().post("/config", json=changes) as response:
            data = await response.json()
            if response.status != 200:
                raise ConfigurationError(f"the simulator refused {changes}: {data['error']}")
        self._config = SimulatorConfig(**data)
        return self._config

    async def reset(self) -> None:
        async with self._client().post("/reset") as response:
            response.raise_for_status()

    async def _wait_until_ready(self, process: asyncio.subprocess.Process) -> int:
        assert process.stdout is not None
        try:
            async with asyncio.timeout(self._startup_timeout):
                line = await process.stdout.readline()
        except TimeoutError:
            raise RuntimeError(
                f"the simulator subprocess did not report ready within "
                f"{self._startup_timeout:g}s; run `{' '.join(self.command)}` to see why"
            ) from None
        match = _READY.search(line)
        if match is None:
            code = await process.wait() if not line else None
            raise RuntimeError(
                f"the simulator subprocess did not start (exit code {code}, said {line!r}); "
                f"run `{' '.join(self.command)}` to see why"
            )
        return int(match.group(1))

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the simulator is not running; use `async with` or `await start()`")
        return self._session


async def _end(process: asyncio.subprocess.Process) -> None:
    """Close stdin (the child's cue to exit), then escalate to SIGTERM and SIGKILL."""
    if process.stdin is not None:
        process.stdin.close()
    for escalate in (process.terminate, process.kill):
        try:
            async with asyncio.timeout(_STOP_GRACE):
                await process.wait()
            return
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                escalate()
    await process.wait()
