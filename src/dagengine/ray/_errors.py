"""The error of the Ray layer."""

from __future__ import annotations

from ..errors import DagEngineError


class ClusterError(DagEngineError, RuntimeError):
    """The Ray cluster, or an actor of the run on it, cannot be used (not installed,
    unreachable, or gone mid-run); the message says which and what to do."""
