"""dagengine: run LLM workloads as a DAG.

A Plugin names the dimensions (analyses) to run over sections (input items), their
dependencies, the prompt of each call and the provider to use; DagEngine runs them with
maximum safe parallelism, rate limits, retries, fallbacks, cost accounting and progress.
"""

from .config import ExecutionConfig
from .engine import DagEngine
from .errors import (
    CircularDependencyError,
    ConfigurationError,
    DagEngineError,
    DependencyError,
    DimensionTimeoutError,
    EngineUsageError,
    HookError,
    MissingAPIKeyError,
    MissingExtraError,
    OutputValidationError,
    ProcessInterrupted,
    ProviderError,
    StoreError,
    UnknownProviderError,
    ValidationError,
)
from .plugin import HookContext, Plugin, PromptContext
from .providers.base import BaseProvider, ProviderRegistry
from .store import RunStore
from .types import (
    CostSummary,
    Dimension,
    DimensionCost,
    DimensionProgress,
    DimensionResult,
    ModelCost,
    ProcessResult,
    ProgressUpdate,
    ProviderCost,
    ProviderFallback,
    ProviderRequest,
    ProviderResponse,
    ProviderSelection,
    Section,
    SectionResult,
    SkipWithResult,
    TokenUsage,
)

__version__ = "0.1.0"

__all__ = [
    "BaseProvider",
    "CircularDependencyError",
    "ConfigurationError",
    "CostSummary",
    "DagEngine",
    "DagEngineError",
    "DependencyError",
    "Dimension",
    "DimensionCost",
    "DimensionProgress",
    "DimensionResult",
    "DimensionTimeoutError",
    "EngineUsageError",
    "ExecutionConfig",
    "HookContext",
    "HookError",
    "MissingAPIKeyError",
    "MissingExtraError",
    "ModelCost",
    "OutputValidationError",
    "Plugin",
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
