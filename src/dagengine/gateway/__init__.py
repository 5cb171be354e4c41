"""Run the open-source Portkey gateway on 127.0.0.1, for tests, demos and local runs.

The gateway is a Node program (npm package ``@portkey-ai/gateway``). `ensure_gateway_installed`
puts a pinned version in a cache directory; `LocalGateway` starts it on a free loopback port
and stops it again::

    async with LocalGateway() as gw:
        client = openai.AsyncOpenAI(base_url=gw.url, api_key=..., default_headers={...})

    with LocalGateway() as gw:  # the same without an event loop
        ...

What the gateway does with requests (headers, retries, errors) is written up in
docs/portkey-gateway.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from ..errors import GatewayError
from ._install import (
    PORTKEY_GATEWAY_PACKAGE,
    PORTKEY_GATEWAY_VERSION,
    default_cache_dir,
    ensure_gateway_installed,
)

__all__ = [
    "PORTKEY_GATEWAY_PACKAGE",
    "PORTKEY_GATEWAY_VERSION",
    "GatewayError",
    "LocalGateway",
    "default_cache_dir",
    "ensure_gateway_installed",
    "node_available",
]

PIN_LOOPBACK_JS = Path(__file__).with_name("pin_loopback.js")
_PORT_FILE_ENV = "DAGENGINE_GATEWAY_PORT_FILE"
_LOG_TAIL_CHARS = 4000
_PROBE_TIMEOUT = 1.0


def node_available() -> bool:
    """True when a `node` executable is on PATH."""
    return shutil.which("node") is not None


def _answers_http(port: int) -> bool:
    # http.client rather than urllib: urllib would send loopback traffic to $http_proxy.
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=_PROBE_TIMEOUT)
    try:
        connection.request("GET", "/")
        connection.getresponse().read()
    except OSError:
        return False
    finally:
        connection.close()
    return True


async def _answers_http_async(port: int) -> bool:
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(request)
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return False
    return status_line.startswith(b"HTTP/")


class LocalGateway:
    """The open-source Portkey gateway as a child process listening on 127.0.0.1 only.

    `port=0` lets the OS pick a free port (read back through the preload script, so there is
    no window in which another process can take it). Output goes to `log_path` when given,
    else to a private temporary file that is deleted on stop; `log_text()` reads it.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        cache_dir: Path | None = None,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        poll_interval: float = 0.05,
    ) -> None:
        if not 0 <= port <= 65535:
            raise GatewayError(f"port must be between 0 and 65535, got {port}")
        self._requested_port = port
        self._cache_dir = cache_dir
        self._log_path = Path(log_path) if log_path is not None else None
        self._extra_env = dict(env or {})
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._poll_interval = poll_interval
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._workdir: Path | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The TCP port the gateway listens on (127.0.0.1)."""
        if self._port is None:
            raise GatewayError("the gateway is not running; use `with LocalGateway() as gw:`")
        return self._port

    @property
    def url(self) -> str:
        """Base URL for an OpenAI SDK client: `http://127.0.0.1:<port>/v1`."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """Process id of the Node process (also its process group id), None when stopped."""
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        """Where the gateway's stdout and stderr go while it runs."""
        if self._log_path is not None:
            return self._log_path
        return self._workdir / "gateway.log" if self._workdir is not None else None

    def log_text(self) -> str:
        """Everything the gateway has printed so far ('' when there is no log)."""
        path = self.log_path
        if path is None:
            return ""
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Install if needed, start the gateway and wait until it answers HTTP."""
        self._spawn(ensure_gateway_installed(self._cache_dir))
        try:
            deadline = time.monotonic() + self._startup_timeout
            while (port := self._bound_port()) is None or not _answers_http(port):
                self._check_deadline(deadline)
                time.sleep(self._poll_interval)
        except BaseException:
            self.stop()
            raise
        return self

    async def astart(self) -> Self:
        """`start()` for use inside an event loop: installs in a thread, polls without blocking."""
        package_dir = await asyncio.to_thread(ensure_gateway_installed, self._cache_dir)
        self._spawn(package_dir)
        try:
            deadline = time.monotonic() + self._startup_timeout
            while (port := self._bound_port()) is None or not await _answers_http_async(port):
                self._check_deadline(deadline)
                await asyncio.sleep(self._poll_interval)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate the gateway's process group, kill it after `stop_timeout`; idempotent."""
        process, self._process = self._process, None
        self._port = None
        if process is not None:
            _stop_process_group(process, self._stop_timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    async def astop(self) -> None:
        """`stop()` without blocking the event loop during the grace period."""
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    # -- internals -------------------------------------------------------------------------

    def _spawn(self, package_dir: Path) -> None:
        if self._process is not None:
            raise GatewayError("this LocalGateway is already running; stop() it first")
        node = shutil.which("node")
        if node is None:
            raise GatewayError("node is not on PATH; install Node.js 18+ to run the gateway")
        self._workdir = Path(tempfile.mkdtemp(prefix="dagengine-gateway-"))
        log_path = self.log_path
        assert log_path is not None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        env = {**os.environ, **self._extra_env, _PORT_FILE_ENV: str(self._port_file)}
        command = [
            node, "--require", str(PIN_LOOPBACK_JS),
            str(package_dir / "build" / "start-server.js"),
            f"--port={self._requested_port}", "--headless",
        ]  # fmt: skip
        try:
            self._process = subprocess.Popen(
                command,
                cwd=package_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stop() reaches children
            )
        except OSError as exc:
            self.stop()
            raise GatewayError(f"cannot start the gateway ({' '.join(command)}): {exc}") from exc

    @property
    def _port_file(self) -> Path:
        assert self._workdir is not None
        return self._workdir / "port"

    def _bound_port(self) -> int | None:
        """The port once the gateway has bound it; raises if the process died meanwhile."""
        process = self._process
        if process is None:
            raise GatewayError("the gateway was stopped while starting")
        if process.poll() is not None:
            raise GatewayError(
                f"the gateway exited with code {process.returncode} while starting "
                f"(is port {self._requested_port} free?); its output:\n{self._log_tail()}"
            )
        if self._port is None:
            with contextlib.suppress(OSError, IndexError, ValueError):
                self._port = int(self._port_file.read_text().split()[1])
        return self._port

    def _check_deadline(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise GatewayError(
                f"the gateway did not answer on 127.0.0.1 within {self._startup_timeout:g}s; "
                f"raise startup_timeout or read its output:\n{self._log_tail()}"
            )

    def _log_tail(self) -> str:
        return self.log_text()[-_LOG_TAIL_CHARS:] or "(no output)"

    def __repr__(self) -> str:
        state = f"url={self.url!r}" if self._port is not None else "stopped"
        return f"LocalGateway({state}, pid={self.pid})"


def _stop_process_group(process: subprocess.Popen[bytes], grace: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # Children of the leader may outlive it; the group id stays valid until they go.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return
    process.wait()
