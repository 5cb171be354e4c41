"""What a group's 429s say: the evidence of the last window, and an inferred limit on trial.

How a group uses them is described in the package docstring, dagengine/ratelimit/__init__.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class Evidence:
    """What the admissions of the last window say, answered or not yet."""

    admitted: int = 0
    refused: int = 0
    through: int = 0  # answered without a 429, or presumed let through
    unknown: int = 0  # admitted after every call whose answer is back: no telling yet
    unknown_in_epoch: int = 0  # ...of those, admitted since the last decrease
    share_since: float = 0.0  # refused since the window's first 429 (a burst ends there)
    first_refused: int = 0  # the admission number of that 429

    @property
    def accepted(self) -> float:
        """Let through, counting the unknown ones at the share that was since the first 429."""
        return self.through + self.unknown * (1 - self.share_since)

    @property
    def share(self) -> float:
        decided = self.refused + self.accepted
        return self.refused / decided if decided else 0.0

    @property
    def nothing_through(self) -> bool:
        """Most admissions answered, every one refused."""
        return self.through == 0 and self.refused >= self.unknown


@dataclass(slots=True)
class Trial:
    """An inferred decrease on trial: did slowing down make 429s rarer?

    Before: the calls admitted from the window's first 429 up to the decrease, counted as
    their answers come in (a burst the provider let through before it does not dilute it).
    After: the calls admitted once those sent since the decrease are being answered.
    """

    first_seq: int
    last_seq: int
    refused_before: int
    inferred_before: float | None  # the limit before this decrease
    fell_before: bool  # a decrease before this one in the same trial made 429s rarer
    start: float | None = None
    admitted: int = 0
    refused: int = 0

    @property
    def before(self) -> float:
        return self.refused_before / (self.last_seq - self.first_seq + 1)

    @property
    def after(self) -> float:
        return self.refused / self.admitted if self.admitted else 0.0

    def fell(self) -> bool:
        """The share after is lower than before, beyond chance (two-proportion z > 2)."""
        before_n, after_n = self.last_seq - self.first_seq + 1, self.admitted
        pooled = (self.refused_before + self.refused) / (before_n + after_n)
        spread = math.sqrt(pooled * (1 - pooled) * (1 / before_n + 1 / after_n))
        return self.before - self.after > 2 * spread
