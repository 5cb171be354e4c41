"""The seed's EmailAnalyzer: one dimension, every email in parallel.

    python examples/email_analyzer.py

Runs on an offline stand-in model; see portkey_emails.py for the full walkthrough on the
simulator or the real Anthropic API through the Portkey gateway.
"""

from __future__ import annotations

from collections import Counter

from _offline import offline_provider

from dagengine import DagEngine, Plugin, PromptContext, ProviderSelection


class EmailAnalyzer(Plugin):
    def __init__(self) -> None:
        super().__init__("simple-email-analyzer", "Simple Email Analyzer",
                         "Fast parallel email analysis")
        self.dimensions = ["analyze_email"]

    def create_prompt(self, ctx: PromptContext) -> str:
        email = ctx.sections[0].content
        return (
            "Analyze this email quickly and categorize it.\n\n"
            f"Email: {email}\n\n"
            "Return ONLY valid JSON (no markdown):\n"
            '{"category": "spam" | "work" | "personal" | "newsletter", '
            '"confidence": 0.95, "summary": "Brief one-line summary"}'
        )

    def select_provider(self, dimension: str, sections: object = None,
                        context: object = None) -> ProviderSelection:
        return ProviderSelection(
            provider="offline",
            options={"model": "claude-3-5-haiku-20241022", "temperature": 0.1, "max_tokens": 150},
        )


EMAILS = [
    "Team meeting moved to 3pm, please bring the quarterly report.",
    "You are a WINNER! Click here to claim your free prize.",
    "Mom says dinner is at 7 this weekend, bring dessert.",
    "This week's newsletter: five tools we love. Unsubscribe anytime.",
    "The client wants the project deadline moved up a week.",
]


def main() -> None:
    engine = DagEngine(plugin=EmailAnalyzer(), providers=[offline_provider()],
                       execution={"concurrency": 100, "max_retries": 3, "retry_delay": 1.0})
    result = engine.run(EMAILS)
    for section in result.sections:
        answer = section.results["analyze_email"]
        print(f"{answer.data['category']:<10} {section.section.content[:60]}")
    counts = Counter(s.results["analyze_email"].data["category"] for s in result.sections)
    costs = result.costs
    assert costs is not None
    print(f"\ncategories: {dict(counts)}")
    print(f"tokens: {costs.total_tokens:,}  cost: ${costs.total_cost:.6f}")


if __name__ == "__main__":
    main()
