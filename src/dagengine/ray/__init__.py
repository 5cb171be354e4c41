"""Run over a Ray cluster: `DagEngine(..., cluster=RayCluster(address=None, workers=4))`.

Installed with the extra `pip install 'dagengine[ray]'`. Importing this package imports
nothing of Ray; RayCluster.start() does. What exists so far is the cluster handle and the
cluster-wide rate limit; the engine side (below) comes with the engine's Run object.

The cluster-wide limit
----------------------
One ClusterLimiter actor per run holds a dagengine.ratelimit.RateLimiter: the configured
rate_limits, the limits learned from headers and the 429 pacing live there once, for the
sum of all workers. It lends permits in grants: a worker's LeasedLimiter (the same
group(provider, model).acquire(tokens) -> Permit interface as RateLimiter) asks for about
LEASE_SECONDS of its recent demand, the actor acquires that many permits from the group as
calls would (waiting at most LEASE_SECONDS for more than the first) and hands them over;
the worker admits calls from them without a remote call, and reports outcomes in batches
on its next call. A grant is valid GRANT_TTL seconds, so a hoard cannot become a burst.
A 429 goes to the actor at once; if it slows the group, the group's generation goes up and
every worker's pending watch() returns, so each drops the permits it holds for that group:
the whole cluster pauses within one round trip. A worker that stops calling (killed, its
node lost) is ended after SESSION_TTL and what it held is released. Since a permit lent is
bucket capacity spent, a dead worker costs the cluster at most its last grant, never more.

How the engine will shard a run (the engine-side work, after the Run refactor)
------------------------------------------------------------------------------
* The driver keeps what is global: the plan (graph, levels), the global dimensions and
  their hooks, the transformations after them, the store, progress, the display, cost and
  the user's callbacks. Workers never open the store.
* Workers are actors, one per RayCluster.worker_count(), each with `num_cpus=1`. Each is
  built once per run from the frozen run deps (plugin, providers, ExecutionConfig, pricing),
  pickled once; a plugin or provider that does not pickle is a ConfigurationError at the
  driver naming the attribute. Each worker has its own LeasedLimiter on the run's
  ClusterLimiter, and its share of `concurrency` (the cluster-wide number of calls in
  flight, split evenly; a later change may lease it like rate permits).
* The driver shards the sections of a section-level phase into batches (tens of sections,
  so a batch is worth a round trip) and keeps each worker a few batches ahead. A worker
  runs each section's own pipeline (dimensions in dependency order, retries, fallbacks,
  parsing, the per-section hooks) exactly as one process does, and streams results back per
  (section, dimension) as plain data: DimensionResult, cost, the call information. The
  driver applies them to its RunState, which the observers (store, progress, callbacks)
  watch as they do in one process, so `resume=True` after a driver crash calls only what
  the store lacks.
* A global dimension is a barrier: the driver waits for its dependencies across all
  shards, runs it locally, applies the transformation, and re-shards the new sections.
* A worker that dies (RayActorError on its stream) loses nothing but its calls in flight:
  the driver knows which (section, dimension) results it received, so the unfinished part
  of the dead worker's batches goes to the other workers (or a restarted actor), and the
  run ends with every section accounted for. The dead worker's limiter session is reaped by
  the ClusterLimiter after SESSION_TTL.
* Progress carries per-worker counts (calls, calls/s) from the result stream; the limiter
  actor's stats() and snapshot() give rate_limited, waiting and the groups' limits.

API for that work
-----------------
    cluster = RayCluster(address=None, workers=4).start()
    limiter = cluster.start_limiter(execution.rate_limits)   # an actor handle; pickles
    # in each worker actor:
    leased = LeasedLimiter(limiter)       # where Call takes a RateLimiter
    permit = await leased.group(provider, model).acquire(estimated_tokens)
    ...
    await leased.aclose()
    # on the driver:
    ray.get(limiter.stats.remote()); ray.get(limiter.snapshot.remote())
    cluster.shutdown()
"""

from ._cluster import RayCluster
from ._errors import ClusterError
from ._leased import LeasedGroup, LeasedLimiter, LeasedPermit
from ._lender import ClusterLimiter
from ._messages import LimiterStats

__all__ = [
    "ClusterError",
    "ClusterLimiter",
    "LeasedGroup",
    "LeasedLimiter",
    "LeasedPermit",
    "LimiterStats",
    "RayCluster",
]
