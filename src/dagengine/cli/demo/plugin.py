"""The walkthrough's plugin: one dimension that classifies one email per call."""

from __future__ import annotations

from typing import Any

from ...plugin import Plugin, PromptContext
from ...types import ProviderSelection
from .settings import DIMENSION, MODEL

__all__ = ["EmailAnalyzer"]


class EmailAnalyzer(Plugin):
    """The walkthrough's plugin: one dimension, each email on its own, all in parallel."""

    def __init__(self) -> None:
        super().__init__("simple-email-analyzer", "Simple Email Analyzer",
                         "Fast parallel email analysis with Portkey")
        self.dimensions = [DIMENSION]

    def create_prompt(self, ctx: PromptContext) -> str:
        email = ctx.sections[0]
        return f"""Analyze this email quickly and categorize it.

Email: {email.content}

Return ONLY valid JSON (no markdown):
{{
  "category": "spam" | "work" | "personal" | "newsletter",
  "confidence": 0.95,
  "summary": "Brief one-line summary"
}}"""

    def select_provider(self, dimension: str, sections: Any = None,
                        context: Any = None) -> ProviderSelection:
        return ProviderSelection(
            provider="anthropic",
            options={"model": MODEL, "temperature": 0.1, "max_tokens": 150},
        )
