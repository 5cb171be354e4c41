"""Install the pinned Portkey gateway from npm into a cache directory that every run reuses."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from ..errors import GatewayError

PORTKEY_GATEWAY_PACKAGE = "@portkey-ai/gateway"
PORTKEY_GATEWAY_VERSION = "1.15.2"

_NPM_INSTALL_TIMEOUT = 600.0
_NPM_OUTPUT_CHARS = 4000


def default_cache_dir() -> Path:
    """`$DAGENGINE_CACHE_DIR/portkey-gateway`, else `~/.cache/dagengine/portkey-gateway`."""
    root = os.environ.get("DAGENGINE_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "dagengine"
    return base / "portkey-gateway"


def _package_dir(cache_dir: Path) -> Path:
    return cache_dir / "node_modules" / "@portkey-ai" / "gateway"


def _installed_version(package_dir: Path) -> str | None:
    try:
        manifest = json.loads((package_dir / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (package_dir / "build" / "start-server.js").is_file():
        return None
    version = manifest.get("version") if isinstance(manifest, dict) else None
    return version if isinstance(version, str) else None


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def gateway_installed(cache_dir: Path | None = None) -> bool:
    """True when the pinned gateway is in `cache_dir` already (no npm install to wait for)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return _installed_version(_package_dir(cache_dir)) == PORTKEY_GATEWAY_VERSION


def ensure_gateway_installed(cache_dir: Path | None = None) -> Path:
    """Install the pinned Portkey gateway into `cache_dir` unless it is there; return its dir.

    Two processes may call this at once: a file lock in `cache_dir` makes the second one wait
    for the first install and then reuse it.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    package_dir = _package_dir(cache_dir)
    if _installed_version(package_dir) == PORTKEY_GATEWAY_VERSION:
        return package_dir

    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        raise GatewayError(
            "the local Portkey gateway needs Node.js 18+ and npm on PATH; install Node.js "
            "(https://nodejs.org or your package manager) or point gateway_url at a running "
            "gateway instead"
        )
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GatewayError(
            f"cannot create the gateway cache directory {cache_dir}: {exc}; "
            "set DAGENGINE_CACHE_DIR to a writable directory"
        ) from exc

    with _exclusive_lock(cache_dir / ".install.lock"):
        if _installed_version(package_dir) == PORTKEY_GATEWAY_VERSION:
            return package_dir  # another process installed it while we waited
        _npm_install(npm, cache_dir)
        installed = _installed_version(package_dir)
        if installed != PORTKEY_GATEWAY_VERSION:
            raise GatewayError(
                f"npm finished but {package_dir} holds version {installed!r}, expected "
                f"{PORTKEY_GATEWAY_VERSION}; delete {cache_dir} and try again"
            )
    return package_dir


def _npm_install(npm: str, cache_dir: Path) -> None:
    spec = f"{PORTKEY_GATEWAY_PACKAGE}@{PORTKEY_GATEWAY_VERSION}"
    command = [
        npm, "install", "--no-audit", "--no-fund",
        # The package's only install script is patch-package with no patches shipped;
        # skipping scripts keeps npm 10 and 11 behaving alike and runs no third-party code.
        "--ignore-scripts", "--save-exact",
        "--prefix", str(cache_dir), spec,
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command,
            cwd=cache_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_NPM_INSTALL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GatewayError(
            f"`{' '.join(command)}` failed: {exc}; check that the npm registry is reachable"
        ) from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-_NPM_OUTPUT_CHARS:]
        raise GatewayError(
            f"`{' '.join(command)}` exited with {done.returncode}; check that the npm "
            f"registry is reachable (npm config get registry) and retry. npm said:\n{output}"
        )
