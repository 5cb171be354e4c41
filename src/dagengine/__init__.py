"""dagengine: run LLM workloads as a DAG.

A Plugin names the dimensions (analyses) to run over sections (input items), their
dependencies, the prompt of each call and the provider to use; DagEngine runs them with
maximum safe parallelism, rate limits, retries, fallbacks, cost accounting and progress.

Layers (tests/test_layering.py checks them): core <- tools. The tools (simulator/, gateway/,
cli/, testing) may import the core (every other module); the core never imports a tool. No
module imports this file, which only gathers the public API, and no files import in a circle.
"""

from ._version import __version__
from .config import ExecutionConfig
from .engine import DagEngine
from .errors import (
    CircularDependencyError,
    ConfigurationError,
    DagEngineError,
    DependencyError,
    DimensionTimeoutError,
    EmptyResponseError,
    EngineUsageError,
    HookError,
    HookResultError,
    MissingAPIKeyError,
    MissingExtraError,
    OutputValidationError,
    PreflightError,
    ProcessInterrupted,
    ProviderError,
    StoreError,
    UnknownProviderError,
    ValidationError,
)
from .estimate import DimensionEstimate, Estimate
from .plugin import HookContext, Plugin, PromptContext
from .providers.base import BaseProvider, ProviderRegistry
from .store import RunStore
from .types import (
    BatchProgress,
    CallInfo,
    CostSummary,
    Dimension,
    DimensionCost,
    DimensionProgress,
    DimensionResult,
    FallbackDecision,
    ModeCost,
    ModelCost,
    ProcessResult,
    ProgressUpdate,
    ProviderCost,
    ProviderFallback,
    ProviderRequest,
    ProviderResponse,
    ProviderSelection,
    RetryDecision,
    Section,
    SectionResult,
    SkipWithResult,
    TokenUsage,
)

__all__ = [
    "BaseProvider",
    "BatchProgress",
    "CallInfo",
    "CircularDependencyError",
    "ConfigurationError",
    "CostSummary",
    "DagEngine",
    "DagEngineError",
    "DependencyError",
    "Dimension",
    "DimensionCost",
    "DimensionEstimate",
    "DimensionProgress",
    "DimensionResult",
    "DimensionTimeoutError",
    "EmptyResponseError",
    "EngineUsageError",
    "Estimate",
    "ExecutionConfig",
    "FallbackDecision",
    "HookContext",
    "HookError",
    "HookResultError",
    "MissingAPIKeyError",
    "MissingExtraError",
    "ModeCost",
    "ModelCost",
    "OutputValidationError",
    "Plugin",
    "PreflightError",
    "ProcessInterrupted",
    "ProcessResult",
    "ProgressUpdate",
    "PromptContext",
    "ProviderCost",
    "ProviderError",
    "ProviderFallback",
    "ProviderRegistry",
    "ProviderRequest",
    "ProviderResponse",
    "ProviderSelection",
    "RetryDecision",
    "RunStore",
    "Section",
    "SectionResult",
    "SkipWithResult",
    "StoreError",
    "TokenUsage",
    "UnknownProviderError",
    "ValidationError",
    "__version__",
]
