"""`DagEngine(tracing=...)`: checked here without importing OpenTelemetry, which only
dagengine.otel imports, once tracing is on.

    tracing=False (the default)   no spans, and nothing of OpenTelemetry is imported
    tracing=True                  spans through the global TracerProvider
    tracing={"capture_content": True, "tracer_provider": provider}

`capture_content` puts the prompt and the answer on the call spans. Its default is the
OpenTelemetry GenAI instrumentations' switch, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT
(off unless "true").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, MissingExtraError

if TYPE_CHECKING:
    from ._run import Run
    from .plugin import Observer

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_KEYS = ("capture_content", "tracer_provider")


@dataclass(frozen=True, slots=True)
class TracingOptions:
    capture_content: bool = False
    tracer_provider: Any = None
    """An OpenTelemetry TracerProvider; None: the global one."""


def tracing_options(value: object) -> TracingOptions | None:
    """The checked `tracing` argument, None when tracing is off."""
    if value is None or value is False:
        return None
    capture = os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() == "true"
    if value is True:
        options = TracingOptions(capture_content=capture)
    elif isinstance(value, Mapping):
        unknown = sorted(str(key) for key in value if key not in _KEYS)
        if unknown:
            raise ConfigurationError(
                f"tracing has no option {', '.join(map(repr, unknown))}: pass True, False, or "
                f"a dict of {', '.join(_KEYS)}")
        capture = value.get("capture_content", capture)
        if not isinstance(capture, bool):
            raise ConfigurationError(
                f"tracing['capture_content'] must be True or False, got {capture!r}")
        provider = value.get("tracer_provider")
        if provider is not None and not callable(getattr(provider, "get_tracer", None)):
            raise ConfigurationError(
                "tracing['tracer_provider'] must be an OpenTelemetry TracerProvider (with "
                f"get_tracer), got {type(provider).__name__}")
        options = TracingOptions(capture_content=capture, tracer_provider=provider)
    else:
        raise ConfigurationError(
            f"tracing must be True, False or a dict such as {{'capture_content': True}}, got "
            f"{type(value).__name__}")
    try:
        import opentelemetry.trace  # noqa: F401 (only to say what to install, now)
    except ImportError:
        raise MissingExtraError("opentelemetry-api", "otel") from None
    return options


def run_tracer(options: TracingOptions, run: Run) -> Observer:
    """The observer that makes `run`'s spans."""
    from .otel import RunTracer

    return RunTracer(run, capture_content=options.capture_content,
                     tracer_provider=options.tracer_provider)
