"""RayCluster: where a run's workers live, a local Ray instance or a cluster joined."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

from ..errors import ValidationError
from ..ratelimit import RateLimiter
from ._errors import ClusterError
from ._lender import GRANT_TTL, LEASE_SECONDS, MAX_GRANT, SESSION_TTL, ClusterLimiter

# Ray makes a node listen on every interface unless it believes clusters are off, which is
# what this variable says (Ray's own switch for single-machine use on macOS and Windows):
# then the node's address is 127.0.0.1 and every server of it binds there.
_LOCAL_ONLY_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_LIMITER_MAX_CALLS = 4096  # a pending watch per worker, plus leases waiting out a pause


class RayCluster:
    """The Ray cluster a run is spread over.

    `address=None` starts a local Ray instance in this process with `workers` CPUs, on
    127.0.0.1 only and without the dashboard; `"auto"` joins the cluster this machine is
    part of, `"ray://host:10001"` one through Ray Client, `"host:6379"` one by its head.
    `workers` is how many worker actors a run uses (None: one per CPU of the cluster).
    `init_options` go to ray.init() as they are (runtime_env, object_store_memory, ...).

    Ray is imported by start(), not before: without a RayCluster nothing of Ray is loaded.
    If Ray is already initialised in this process, start() uses that connection and
    shutdown() leaves it alone.
    """

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        *,
        namespace: str = "dagengine",
        init_options: Mapping[str, Any] | None = None,
    ) -> None:
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValidationError(
                "RayCluster.address",
                "None (start a local Ray instance), 'auto' or 'ray://host:port'",
                address,
            )
        if workers is not None and (
            isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
        ):
            raise ValidationError("RayCluster.workers", "a whole number >= 1, or None", workers)
        if init_options is not None and not isinstance(init_options, Mapping):
            raise ValidationError("RayCluster.init_options", "a mapping of ray.init() options",
                                  init_options)
        self.address = address.strip() if address else None
        self.workers = workers
        self.namespace = namespace
        self.init_options = dict(init_options or {})
        self._ray: ModuleType | None = None
        self._owns_connection = False
        self.actors: list[Any] = []  # the worker actors of the run under way, for tests
        self.last_limiter_stats: Any = None  # the limiter actor's LimiterStats at its end

    def __repr__(self) -> str:
        return f"RayCluster(address={self.address!r}, workers={self.workers!r})"

    @property
    def started(self) -> bool:
        return self._ray is not None

    def start(self) -> RayCluster:
        """Start the local instance or connect to `address`; idempotent."""
        if self._ray is not None:
            return self
        if self.address is None:
            with _local_only():
                ray = _import_ray()
                if not ray.is_initialized():
                    self._init(ray, address="local", num_cpus=self.workers or os.cpu_count(),
                               include_dashboard=False)
        else:
            ray = _import_ray()
            if not ray.is_initialized():
                self._init(ray, address=self.address)
        self._ray = ray
        return self

    def shutdown(self) -> None:
        """Disconnect; stop the local instance if start() started it."""
        ray, self._ray = self._ray, None
        if ray is not None and self._owns_connection:
            self._owns_connection = False
            ray.shutdown()

    def worker_count(self) -> int:
        """How many worker actors a run uses: `workers`, else the cluster's CPUs."""
        if self.workers is not None:
            return self.workers
        cpus = self._started_ray().cluster_resources().get("CPU", 1)
        return max(1, int(cpus))

    def start_limiter(
        self,
        rate_limits: Mapping[str, Mapping[str, float]] | None = None,
        *,
        lease_seconds: float = LEASE_SECONDS,
        grant_ttl: float = GRANT_TTL,
        session_ttl: float = SESSION_TTL,
        max_grant: int = MAX_GRANT,
    ) -> Any:
        """Start the run's one ClusterLimiter actor; give its handle to LeasedLimiter.

        `rate_limits` is ExecutionConfig.rate_limits, checked here so that a mistake is a
        ValidationError at the driver rather than a dead actor. The actor takes no CPU of
        the cluster's and dies with the driver; this returns once it runs.
        """
        RateLimiter(rate_limits)  # raises ValidationError, naming the key to fix
        ray = self._started_ray()
        actor = ray.remote(ClusterLimiter).options(
            num_cpus=0, max_concurrency=_LIMITER_MAX_CALLS, namespace=self.namespace,
        )
        handle = actor.remote(
            dict(rate_limits or {}), lease_seconds=lease_seconds, grant_ttl=grant_ttl,
            session_ttl=session_ttl, max_grant=max_grant,
        )
        try:
            # Its process takes a second to start: waited for here, so that a worker's first
            # lease is not what pays for it, and a failure to start is the driver's error.
            ray.get(handle.__ray_ready__.remote())
        except ray.exceptions.RayError as exc:
            raise ClusterError(
                f"the limiter actor did not start: {exc}; the cluster's workers must be able "
                f"to import dagengine (install it there, or pass init_options={{'runtime_env': "
                f"...}})"
            ) from exc
        return handle

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def _init(self, ray: ModuleType, **options: Any) -> None:
        options = {"namespace": self.namespace, **options, **self.init_options}
        try:
            ray.init(**options)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
            where = "a local Ray instance" if self.address is None else repr(self.address)
            raise ClusterError(f"could not start or join {where}: {exc}") from exc
        self._owns_connection = True

    def _started_ray(self) -> ModuleType:
        if self._ray is None:
            raise ClusterError("the RayCluster is not started: call start() first")
        return self._ray


def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError as exc:
        raise ClusterError(
            "dagengine.ray needs Ray, which is not installed: pip install 'dagengine[ray]'"
        ) from exc
    return ray


@contextlib.contextmanager
def _local_only() -> Iterator[None]:
    """While a local instance starts: its node address is 127.0.0.1, so it binds only there.

    The variable is read when Ray is imported, and its value kept in a module constant
    that is read again when a node starts: both are set for the start and restored after,
    so that a later ray.init() of the user's own behaves as Ray does by default.
    """
    saved_env = os.environ.get(_LOCAL_ONLY_VAR)
    constants = sys.modules.get("ray._private.ray_constants")
    saved_constant = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[_LOCAL_ONLY_VAR] = "0"
    if constants is not None:
        setattr(constants, "ENABLE_RAY_CLUSTER", False)  # noqa: B010 (a module's constant)
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop(_LOCAL_ONLY_VAR, None)
        else:
            os.environ[_LOCAL_ONLY_VAR] = saved_env
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None:
            if saved_constant is None:  # imported just now: what Ray would have read
                saved_constant = (
                    not getattr(constants, "IS_WINDOWS_OR_OSX", False) if saved_env is None
                    else saved_env.lower() in {"1", "true"}
                )
            setattr(constants, "ENABLE_RAY_CLUSTER", saved_constant)  # noqa: B010
