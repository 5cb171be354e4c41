"""A provider pool: one provider entry spread over several targets (API keys, endpoints,
models or other configured providers), each its own rate-limit group, with weights.

    providers={"anthropic": {"targets": [{"api_key": K1, "weight": 2, "name": "team-a"},
                                         {"api_key": K2}]}}

A target of a built-in entry is the entry's own config with the target's keys over it
(`api_key`, `base_url`, any setting the provider accepts), plus `weight` (default 1), `name`
and `model` (the model this target is asked for, over the request's). A target that names
`provider` instead is another configured entry, so one pool spans providers:

    providers={"claude": {...}, "gpt": {...},
               "any": {"targets": [{"provider": "claude", "model": "claude-3-5-haiku-latest",
                                    "weight": 3},
                                   {"provider": "gpt", "model": "gpt-4o-mini"}]}}

and `select_provider` answers "any". Targets are shown by `name`, else by a fingerprint of
their key ("sha256:" and 12 hex digits, as the simulator's /stats names keys), else by the
provider they name; never by the key itself.

Which target a request goes to (`choose`): the targets that could send now (their group has
capacity, and they are not avoided after a 429 or a failure), by smooth weighted round robin
(nginx's: deterministic, and the split follows the weights at any scale); when none can, the
one that can soonest. The engine's side of it (moving on after a 429) is in dagengine/_pool.py.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .base import BaseProvider, ProviderRegistry

if TYPE_CHECKING:
    from ..ratelimit import LimitGroup, RateLimiter
    from ..types import ProviderRequest, ProviderResponse
    from ._batch import BatchAPI

TARGET_KEYS = ("weight", "name", "model")  # the pool's own keys of a target; the rest: settings
AVOID_SECONDS = 1.0  # first avoidance of a target that failed without saying how long; doubles
MAX_AVOID_SECONDS = 30.0


def key_fingerprint(key: str) -> str:
    """How a target with no name is shown: useless to call with, enough to tell keys apart."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


@dataclass(slots=True, eq=False)
class PoolTarget:
    """One target of a pool: its provider, weight and the round robin's state for it."""

    name: str
    weight: float
    provider: BaseProvider | None = field(default=None, repr=False)
    model: str | None = None
    refers_to: str | None = None  # a target naming another configured provider
    current: float = 0.0  # smooth weighted round robin
    avoid_until: float = -math.inf
    strikes: int = 0  # failures in a row, for the avoidance backoff

    @property
    def bound(self) -> BaseProvider:
        if self.provider is None:
            raise ConfigurationError(
                f"pool target {self.name!r} names provider {self.refers_to!r}, which is not "
                "configured in the same providers={...}")
        return self.provider

    def avoid(self, now: float, seconds: float | None) -> None:
        """After a 429 (its retry-after) or a failure (a backoff doubling per failure)."""
        self.strikes += 1
        if seconds is None:
            seconds = min(AVOID_SECONDS * 2 ** (self.strikes - 1), MAX_AVOID_SECONDS)
        self.avoid_until = max(self.avoid_until, now + seconds)

    def answered(self) -> None:
        self.strikes = 0


class PoolProvider(BaseProvider):
    """A provider entry with `targets`. The engine routes each request to one target
    (`choose`); `execute` is only a fallback for code that calls a provider directly."""

    def __init__(self, name: str, targets: list[PoolTarget]) -> None:
        self.name = name
        self.targets = targets

    @property
    def handles_retries(self) -> bool:  # type: ignore[override]
        return any(t.provider is not None and t.provider.handles_retries for t in self.targets)

    def bind(self, registry: ProviderRegistry) -> None:
        """Resolve the targets that name other providers of the same registry."""
        for target in self.targets:
            if target.refers_to is None:
                continue
            if target.refers_to == self.name or not registry.has(target.refers_to):
                raise ConfigurationError(
                    f"providers[{self.name!r}].targets: {target.refers_to!r} is not another "
                    f"configured provider; configured: {', '.join(registry.list())}")
            provider = registry.get(target.refers_to)
            if isinstance(provider, PoolProvider):
                raise ConfigurationError(
                    f"providers[{self.name!r}].targets: {target.refers_to!r} is a pool itself; "
                    "a target names a single provider")
            target.provider = provider

    def group(self, limiter: RateLimiter, target: PoolTarget, model: str | None) -> LimitGroup:
        provider = target.bound
        return limiter.target_group(self.name, target.name, target.model or model,
                                    ramp=not provider.handles_retries)

    def choose(self, limiter: RateLimiter, model: str | None, tokens: int, now: float,
               exclude: Iterable[PoolTarget] = ()) -> tuple[PoolTarget, float] | None:
        """The target a request goes to and the seconds until it can go (<= 0: now); None
        when every target is excluded."""
        skipped = set(map(id, exclude))
        ready: list[PoolTarget] = []
        soonest: tuple[PoolTarget, float] | None = None
        for target in self.targets:
            if id(target) in skipped:
                continue
            wait = max(target.avoid_until - now,
                       self.group(limiter, target, model).ready_in(tokens))
            if wait <= 0:
                ready.append(target)
            elif soonest is None or wait < soonest[1]:
                soonest = (target, wait)
        if not ready:
            return soonest
        total = 0.0
        for target in ready:
            target.current += target.weight
            total += target.weight
        best = max(ready, key=lambda t: t.current)  # the first of equals: deterministic
        best.current -= total
        return best, 0.0

    def request_for(self, target: PoolTarget, request: ProviderRequest) -> ProviderRequest:
        """The request as `target` is asked: with its model, when it names one."""
        if target.model is None or request.options.get("model") == target.model:
            return request
        return request.model_copy(update={"options": {**request.options, "model": target.model}})

    async def execute(self, request: ProviderRequest) -> ProviderResponse:
        target = max(self.targets, key=lambda t: t.weight)
        return await target.bound.execute(self.request_for(target, request))

    async def aclose(self) -> None:
        for target in self.targets:
            if target.refers_to is None and target.provider is not None:
                await target.provider.aclose()

    def check_options(self, options: Mapping[str, Any]) -> None:
        for target in self.targets:
            model = {"model": target.model} if target.model else {}
            target.bound.check_options({**options, **model})

    def batch_api(self) -> BatchAPI | None:
        return self.targets[0].bound.batch_api()

    @property
    def cache_scope(self) -> str:
        # Any target answers the same request alike: the pool's answers share one entry.
        return ""

    def __repr__(self) -> str:
        return f"<PoolProvider name={self.name!r} targets={[t.name for t in self.targets]}>"


def build_pool(name: str, config: Mapping[str, Any], build: Any) -> PoolProvider:
    """A pool from a provider entry with `targets`; `build(name, config)` builds a built-in
    provider from a config dict (providers.build_provider)."""
    targets = config["targets"]
    where = f"providers[{name!r}].targets"
    if not isinstance(targets, (list, tuple)) or not targets:
        raise ConfigurationError(
            f"{where} must be a non-empty list of dicts, e.g. [{{'api_key': ..., 'weight': 2}}, "
            f"{{'api_key': ...}}]; got {type(targets).__name__}")
    shared = {k: v for k, v in config.items() if k != "targets"}
    built: list[PoolTarget] = []
    for index, entry in enumerate(targets):
        here = f"{where}[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigurationError(f"{here} must be a dict, got {type(entry).__name__}")
        weight = entry.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not math.isfinite(weight) or weight <= 0:
            raise ConfigurationError(f"{here}.weight must be a positive number, got {weight!r}")
        label: str | None = entry.get("name")
        model: str | None = entry.get("model")
        for key, value in (("name", label), ("model", model)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigurationError(f"{here}.{key} must be a non-empty string")
        if "provider" in entry:
            extra = sorted(set(entry) - {"provider", *TARGET_KEYS})
            refers_to = entry["provider"]
            if extra or not isinstance(refers_to, str):
                raise ConfigurationError(
                    f"{here}: a target naming another provider takes only provider (a "
                    f"configured provider's name), {', '.join(TARGET_KEYS)}")
            built.append(PoolTarget(label or refers_to, float(weight), model=model,
                                    refers_to=refers_to))
            continue
        settings = {**shared, **{k: v for k, v in entry.items() if k not in TARGET_KEYS}}
        provider = build(name, settings)
        api_key = getattr(getattr(provider, "settings", None), "api_key", None)
        shown: str = label or (key_fingerprint(api_key) if isinstance(api_key, str)
                               else f"target-{index}")
        built.append(PoolTarget(shown, float(weight), provider, model=model))
    names = [t.name for t in built]
    for index, target in enumerate(built):
        if names.count(target.name) > 1:  # one key at two endpoints, say
            target.name = f"{target.name}#{index}"
    return PoolProvider(name, built)
