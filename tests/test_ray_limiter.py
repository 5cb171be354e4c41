"""The cluster-wide rate limit on a real local Ray cluster, started here.

Workers are Ray actors, each with its own LeasedLimiter on one ClusterLimiter actor;
admissions are stamped by the workers with time.monotonic(), one clock on one machine.
"""

from __future__ import annotations

import asyncio
import bisect
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from dagengine import ValidationError
from dagengine.ratelimit._group import HEADROOM, START_FILL  # the limiter the actor runs
from dagengine.ray import ClusterError, ClusterLimiter, LeasedLimiter, RayCluster

HAVE_RAY = find_spec("ray") is not None
needs_ray = [
    pytest.mark.ray,
    pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed: pip install 'dagengine[ray]'"),
]
LIMIT = 100  # requests per second, configured
WORKERS = 3
GRANT = int(LIMIT * HEADROOM * 0.2)  # most permits one grant holds: LEASE_SECONDS of the rate


class Worker:
    """A worker actor: one LeasedLimiter, callers that acquire as fast as they are let."""

    def __init__(self) -> None:
        self.leased: LeasedLimiter | None = None

    async def attach(self, limiter: Any) -> None:
        if self.leased is not None:
            await self.leased.aclose()
        self.leased = LeasedLimiter(limiter)

    def _group(self) -> Any:
        assert self.leased is not None
        return self.leased.group("openai", "gpt-4o")

    async def hammer(self, seconds: float, callers: int, tokens: int = 0) -> list[float]:
        """Admission times of `callers` loops acquiring and succeeding for `seconds`."""
        group = self._group()
        stamps: list[float] = []
        end = time.monotonic() + seconds

        async def caller() -> None:
            while time.monotonic() < end:
                permit = await group.acquire(tokens)
                stamps.append(time.monotonic())
                permit.success(tokens)

        await asyncio.gather(*(caller() for _ in range(callers)))
        return stamps

    async def prime(self, callers: int) -> int:
        """Admit `callers` requests at once, then hold the spare permits lent meanwhile."""
        group = self._group()
        permits = await asyncio.gather(*(group.acquire() for _ in range(callers)))
        for permit in permits:
            permit.success()
        # The lease sent ahead, as demand was high, returns; LeasedGroup has no event for it.
        async with asyncio.timeout(5):
            while not group.spare:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        return int(group.spare)

    async def refuse_one(self, retry_after: float) -> float:
        permit = await self._group().acquire()
        refused_at = time.monotonic()
        # Headers saying nothing remains: a limit, not a random 429 the group may ignore.
        permit.rate_limited(retry_after, {"requests_remaining": 0})
        return refused_at

    async def spare_once_revoked(self, seconds: float) -> int:
        """The spare permits once they are gone, waiting at most `seconds` for it."""
        group = self._group()
        async with asyncio.timeout(seconds):
            while group.spare:  # noqa: ASYNC110 (the revocation comes in a Ray callback)
                await asyncio.sleep(0.01)
        return int(group.spare)

    async def admit_one(self) -> float:
        permit = await self._group().acquire()
        permit.success()
        return time.monotonic()

    async def hold(self, count: int) -> int:
        """Admit `count` requests and never report them, as a worker killed mid-call."""
        group = self._group()
        self._held = [await group.acquire() for _ in range(count)]
        return group.in_flight

    async def succeed_with_headers(self, rate_limit: dict[str, float]) -> None:
        permit = await self._group().acquire()
        permit.success(None, rate_limit)
        assert self.leased is not None
        await self.leased.aclose()
        self.leased = None

    async def close(self) -> int:
        assert self.leased is not None
        await self.leased.aclose()
        rpcs = self.leased.rpcs
        self.leased = None
        return rpcs


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    if not HAVE_RAY:
        pytest.skip("Ray is not installed: pip install 'dagengine[ray]'")
    import ray.cloudpickle

    # Workers cannot import this test module; send the Worker class itself.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with RayCluster(address=None, workers=WORKERS) as started:
        yield started


@pytest.fixture(scope="module")
def workers(cluster: RayCluster) -> list[Any]:
    import ray

    actors = [ray.remote(Worker).options(num_cpus=1).remote() for _ in range(WORKERS)]
    ray.get([actor.__ray_ready__.remote() for actor in actors])
    return actors


@pytest.fixture
def limiters(cluster: RayCluster) -> Iterator[list[Any]]:
    """The test's limiter actors, started by the test and killed after it."""
    import ray

    started: list[Any] = []
    yield started
    for limiter in started:
        ray.kill(limiter)


def attach(workers: list[Any], limiter: Any) -> None:
    import ray

    ray.get([worker.attach.remote(limiter) for worker in workers])


def most_in_window(stamps: list[float], seconds: float) -> int:
    stamps = sorted(stamps)
    return max(bisect.bisect_right(stamps, t + seconds) - i for i, t in enumerate(stamps))


# -- without Ray ------------------------------------------------------------------------


def test_import_dagengine_imports_nothing_of_ray() -> None:
    code = ("import sys, dagengine, dagengine.ray; "
            "dagengine.ray.RayCluster(workers=2); "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=os.environ | {"PYTHONPATH": str(_src())})
    assert out.stdout.strip() == "[]"


def test_ray_cluster_refuses_bad_settings_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"RayCluster.workers must be a whole number"):
        RayCluster(workers=0)
    with pytest.raises(ValidationError, match=r"RayCluster.workers"):
        RayCluster(workers=True)
    with pytest.raises(ValidationError, match=r"RayCluster.address must be None"):
        RayCluster(address="  ")
    with pytest.raises(ClusterError, match=r"call start\(\) first"):
        RayCluster().start_limiter()


def test_without_ray_installed_start_says_which_extra_to_install() -> None:
    code = ("import sys; sys.modules['ray'] = None\n"
            "from dagengine.ray import RayCluster, ClusterError\n"
            "try:\n    RayCluster().start()\nexcept ClusterError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=os.environ | {"PYTHONPATH": str(_src())})
    assert "pip install 'dagengine[ray]'" in out.stdout


def _src() -> Path:
    return Path(__file__).resolve().parents[1] / "src"


class InProcess:
    """A ClusterLimiter behind the shape of a Ray actor handle, on the test's own loop:
    the lending protocol's bookkeeping, tested without starting Ray."""

    def __init__(self, limiter: ClusterLimiter) -> None:
        self.limiter = limiter

    def __getattr__(self, method: str) -> Any:
        target = getattr(self.limiter, method)

        class Method:
            @staticmethod
            def remote(*args: Any) -> Any:
                async def call() -> Any:
                    answer = target(*args)
                    return await answer if asyncio.iscoroutine(answer) else answer

                task = asyncio.ensure_future(call())
                return type("Ref", (), {"future": lambda self: task})()

        return Method


async def test_a_permit_is_reported_once_and_an_unreported_one_fails_on_exit() -> None:
    actor = ClusterLimiter({"openai": {"requests_per_second": 50}})
    async with LeasedLimiter(InProcess(actor)) as leased:
        group = leased.group("openai", "gpt-4o")
        permit = await group.acquire()
        permit.success()
        with pytest.raises(RuntimeError, match="report each one once"):
            permit.failed()
        async with await group.acquire():
            pass
        assert group.in_flight == 0
    stats = actor.stats()
    assert stats.settled == stats.granted and stats.held == 0 and stats.sessions == []


async def test_a_cancelled_waiter_takes_nothing() -> None:
    actor = ClusterLimiter({"openai": {"requests_per_minute": 60}})  # one a second
    async with LeasedLimiter(InProcess(actor)) as leased:
        group = leased.group("openai")
        first = await group.acquire()
        waiter = asyncio.ensure_future(group.acquire())
        await asyncio.sleep(0)
        assert group.waiting == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert (group.waiting, group.in_flight) == (0, 1)
        first.success()


async def test_a_request_over_the_usual_estimate_waits_for_a_grant_that_fits() -> None:
    actor = ClusterLimiter({"openai": {"tokens_per_minute": 600_000}})
    async with LeasedLimiter(InProcess(actor)) as leased:
        group = leased.group("openai")
        small = [await group.acquire(10) for _ in range(5)]
        async with asyncio.timeout(5):
            big = await group.acquire(4000)  # far over the small grants' budget
        assert big._lent.grant.tokens_each >= 4000
        for permit in [*small, big]:
            permit.success(10)


async def test_a_closed_limiter_says_so() -> None:
    leased = LeasedLimiter(InProcess(ClusterLimiter()))
    await leased.aclose()
    with pytest.raises(ClusterError, match="was closed"):
        await leased.group("openai").acquire()


# -- on a local Ray cluster -------------------------------------------------------------


def ray_test(function: Any) -> Any:
    for mark in needs_ray:
        function = mark(function)
    return function


@ray_test
@pytest.mark.usefixtures("workers")
def test_local_cluster_listens_on_loopback_only(cluster: RayCluster) -> None:
    listening = _listening_sockets(_process_tree(os.getpid()))
    names = {name for name, _ in listening}
    # The GCS, the raylet and the worker processes each serve gRPC: all must be found.
    assert {"gcs_server", "raylet"} <= names, listening
    assert len(listening) >= 4, listening
    exposed = [(name, address) for name, address in listening if not address.is_loopback]
    assert exposed == []
    assert cluster.started
    assert cluster.worker_count() == WORKERS


@ray_test
def test_workers_together_stay_within_the_cluster_limit(
    cluster: RayCluster, workers: list[Any], limiters: list[Any]
) -> None:
    import ray

    limiter = cluster.start_limiter({"openai": {"requests_per_second": LIMIT}})

    limiters.append(limiter)
    attach(workers, limiter)
    seconds = 2.5
    runs = ray.get([worker.hammer.remote(seconds, 16) for worker in workers])
    stamps = sorted(t for run in runs for t in run)
    assert all(runs), "every worker was admitted some requests"
    span = stamps[-1] - stamps[0]
    # The single-process bucket's own allowance: it starts half full. The cluster's: each
    # worker may have had one grant in hand that it spends at once.
    burst = LIMIT * HEADROOM * START_FILL + WORKERS * GRANT
    assert len(stamps) <= LIMIT * 1.05 * span + burst
    assert most_in_window(stamps, 1.0) <= LIMIT * 1.05 + burst
    # Past the start-up allowance, any second holds the limit and the grants in hand only.
    steady = [t for t in stamps if t >= stamps[0] + 1.0]
    assert most_in_window(steady, 1.0) <= LIMIT * 1.05 + WORKERS * GRANT
    ray.get([worker.close.remote() for worker in workers])
    stats = ray.get(limiter.stats.remote())
    assert stats.settled == stats.granted
    assert stats.held == 0


@ray_test
def test_a_429_at_one_worker_pauses_every_worker_at_once(
    cluster: RayCluster, workers: list[Any], limiters: list[Any]
) -> None:
    import ray

    # Grants that never expire: only the revocation can take the spare permits away.
    limiter = cluster.start_limiter({"openai": {"requests_per_second": LIMIT}}, grant_ttl=60)
    limiters.append(limiter)
    refuser, other = workers[0], workers[1]
    attach([refuser, other], limiter)
    assert ray.get(other.prime.remote(12)) > 0, "the other worker holds spare permits"
    retry_after = 1.0
    refused_at = ray.get(refuser.refuse_one.remote(retry_after))
    assert ray.get(other.spare_once_revoked.remote(5.0)) == 0
    groups = ray.get(limiter.snapshot.remote())
    assert groups["openai"]["rate_limited"] == 1
    allowed = groups["openai"]["allowed_requests_per_minute"]
    # Slowed for everyone (never below what got through, so not necessarily halved).
    assert allowed is not None and allowed < LIMIT * 60 * HEADROOM
    # The other worker's next request waits out the retry-after the refuser was given.
    assert ray.get(other.admit_one.remote()) >= refused_at + retry_after * 0.95
    ray.get([refuser.close.remote(), other.close.remote()])


@ray_test
def test_at_high_rates_one_limiter_round_trip_serves_20_requests_or_more(
    cluster: RayCluster, workers: list[Any], limiters: list[Any]
) -> None:
    import ray

    for limits in ({"openai": {"requests_per_second": 3000}}, {}):
        limiter = cluster.start_limiter(limits)
        limiters.append(limiter)
        pair = workers[:2]
        attach(pair, limiter)
        runs = ray.get([worker.hammer.remote(1.5, 32) for worker in pair])
        worker_rpcs = ray.get([worker.close.remote() for worker in pair])
        stats = ray.get(limiter.stats.remote())
        admitted = sum(len(run) for run in runs)
        assert admitted >= 500, f"a high rate, {limits}"
        assert stats.rpcs == sum(worker_rpcs)
        assert stats.rpcs * 20 <= admitted, (limits, stats)


@ray_test
def test_token_budget_holds_across_workers(
    cluster: RayCluster, workers: list[Any], limiters: list[Any]
) -> None:
    import ray

    tokens_per_second = 2000
    limiter = cluster.start_limiter({"openai": {"tokens_per_second": tokens_per_second}})
    limiters.append(limiter)
    attach(workers, limiter)
    tokens = 40
    runs = ray.get([worker.hammer.remote(2.0, 8, tokens) for worker in workers])
    stamps = sorted(t for run in runs for t in run)
    span = stamps[-1] - stamps[0]
    allowed = tokens_per_second * HEADROOM
    burst = allowed * START_FILL + WORKERS * allowed * 0.2 * 1.05
    assert len(stamps) * tokens <= tokens_per_second * 1.05 * span + burst
    ray.get([worker.close.remote() for worker in workers])


@ray_test
def test_headers_seen_by_one_worker_set_the_limit_for_all(
    cluster: RayCluster, workers: list[Any], limiters: list[Any]
) -> None:
    import ray

    limiter = cluster.start_limiter()

    limiters.append(limiter)
    attach(workers[:1], limiter)
    ray.get(workers[0].succeed_with_headers.remote({"requests_per_minute": 600}))
    groups = ray.get(limiter.snapshot.remote())
    assert groups["openai/gpt-4o"]["learned_requests_per_minute"] == 600
    assert groups["openai/gpt-4o"]["allowed_requests_per_minute"] == 600 * HEADROOM


@ray_test
def test_a_worker_killed_mid_lease_gives_its_grants_back(
    cluster: RayCluster, workers: list[Any], limiters: list[Any]
) -> None:
    import ray

    limiter = cluster.start_limiter({"openai": {"requests_per_second": LIMIT}}, session_ttl=2.0)

    limiters.append(limiter)
    doomed = ray.remote(Worker).options(num_cpus=0).remote()
    ray.get(doomed.attach.remote(limiter))
    assert ray.get(doomed.hold.remote(30)) == 30
    before = ray.get(limiter.stats.remote())
    assert before.held >= 30 and len(before.sessions) == 1
    ray.kill(doomed)
    deadline = time.monotonic() + 15
    while (stats := ray.get(limiter.stats.remote())).sessions:
        assert time.monotonic() < deadline, f"the dead worker's session was never ended: {stats}"
        time.sleep(0.1)
    assert stats.held == 0 and stats.reaped_sessions == 1
    assert ray.get(limiter.snapshot.remote())["openai"]["in_flight"] == 0
    # The cluster goes on at its limit without the dead worker's share.
    survivor = workers[0]
    attach([survivor], limiter)
    stamps = ray.get(survivor.hammer.remote(1.0, 8))
    assert len(stamps) >= 10
    ray.get(survivor.close.remote())


def _process_tree(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grew = {root}, True
    while grew:
        grown = tree | {pid for pid, parent in parents.items() if parent in tree}
        grew, tree = grown != tree, grown
    return tree


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _listening_sockets(pids: set[int]) -> list[tuple[str, Address]]:
    """(process name, local address) of every TCP socket in LISTEN state the pids hold."""
    listening: dict[str, Address] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            raw = bytes.fromhex(fields[1].split(":")[0])
            # /proc prints each 32-bit word of the address in host (little-endian) order.
            packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            address = ipaddress.ip_address(packed)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            listening[fields[9]] = address
    found = []
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        for link in links:
            inode = link.removeprefix("socket:[").removesuffix("]")
            if link.startswith("socket:[") and inode in listening:
                found.append((name, listening[inode]))
    return found
