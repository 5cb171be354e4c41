"""Run over a Ray cluster: `DagEngine(..., cluster=RayCluster(address=None, workers=4))`.

Installed with the extra `pip install 'dagengine[ray]'`. Importing this package imports
nothing of Ray; RayCluster.start() does.

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

How a run is spread (engine side: _engine.py on the driver, _worker.py on the workers)
-----------------------------------------------------------------------------------
    engine = DagEngine(plugin, providers, execution, cluster=RayCluster(workers=4))

* The driver keeps what is global: the plan, the global dimensions and their hooks, the
  transformations after them, the store, progress, the display, cost and the user's
  callbacks. Workers never open the store and never call a callback.
* The driver runs the DAG level by level across its global barriers: a level is the
  section dimensions whose global dependencies have all run. Its sections go in shards
  (up to SHARD_SECTIONS, SHARDS_AHEAD in flight per worker) to the worker actors, which
  run every section dimension of the level that a section needs, pipelined per section
  as in one process, on dagengine's own Scheduler and CallRunner (retries, fallbacks,
  parsing, the per-section hooks). Then the driver runs the level's global dimensions and
  their transformations, and the next level is sharded from the new section list.
* Workers are actors (`num_cpus=1`, spread), started per run with the run's frozen parts
  (plugin, providers, ExecutionConfig, pricing) pickled once by the driver; a plugin or
  provider that does not pickle is a ConfigurationError naming the attribute, before any
  call. Each has a LeasedLimiter on the run's ClusterLimiter and its share of
  `concurrency` (the cluster-wide number of calls in flight, split evenly); the driver's
  own calls (the global dimensions) go through a LeasedLimiter too.
* Workers stream results back in batches (every BATCH_SECONDS), which the driver applies
  through the single-process scheduler's bookkeeping: progress, callbacks, the store and
  cost see what they see in one process, and `resume=True` sends the stored results with
  the shards, so only what is missing is called.
* A worker that dies ends its shards' streams with an actor error: what the driver has
  not received of them goes to the other workers as new shards while a replacement actor
  starts; a result received twice counts once. Its limiter session is reaped after
  SESSION_TTL.
* ProgressUpdate.workers: per worker, results delivered, requests, in flight, results/s.
* Not on workers: the response cache (it lives in the store): calls made on workers are
  always sent. A plugin's own state changed by hooks on a worker stays on that worker.

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
