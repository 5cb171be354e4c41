"""A multi-dimension DAG: sentiment and topics in parallel, then a summary that uses both,
then one global overview that also filters the sections for a last per-section step.

    python examples/review_pipeline.py

    sentiment ─┐
               ├─> summary ─> overview (global, keeps negative reviews) ─> reply
    topics ────┘
"""

from __future__ import annotations

from typing import Any

from _offline import offline_answer, offline_provider

from dagengine import (
    DagEngine,
    Dimension,
    DimensionResult,
    Plugin,
    PromptContext,
    ProviderRequest,
    ProviderResponse,
    Section,
)


def keep_negative(result: DimensionResult, sections: list[Section]) -> list[Section]:
    """The overview's transform: only reviews that need a reply go on."""
    negative = set(result.data["negative_indexes"])
    return [s for i, s in enumerate(sections) if i in negative]


class ReviewPipeline(Plugin):
    def __init__(self) -> None:
        super().__init__("reviews", "Review pipeline", "Sentiment, topics, summary, replies")
        self.dimensions = [
            "sentiment",
            "topics",
            "summary",
            Dimension(name="overview", scope="global", transform=keep_negative),
            "reply",
        ]

    def define_dependencies(self, ctx: Any) -> dict[str, list[str]]:
        return {
            "summary": ["sentiment", "topics"],
            "overview": ["sentiment"],
            "reply": ["overview"],
        }

    def create_prompt(self, ctx: PromptContext) -> str:
        if ctx.dimension == "overview":
            sentiments = ctx.dependencies["sentiment"].data["sections"]
            labels = [r.data["sentiment"] if r.ok else "unknown" for r in sentiments]
            return f"Write an overview of {len(labels)} reviews with sentiments {labels}"
        review = ctx.sections[0].content
        if ctx.dimension == "summary":
            sentiment = ctx.dependencies["sentiment"].data["sentiment"]
            topics = ctx.dependencies["topics"].data["topics"]
            return f"Summarize this {sentiment} review about {topics}: {review}"
        return f"Give the {ctx.dimension} of this review as JSON: {review}"

    def select_provider(self, dimension: str, sections: Any = None, context: Any = None) -> Any:
        return {"provider": "offline", "options": {"model": "claude-3-5-haiku-20241022"}}


def answer_with_overview(request: ProviderRequest) -> ProviderResponse:
    """The offline model, taught to list which reviews were negative in the overview."""
    response = offline_answer(request)
    if request.dimension == "overview":
        assert isinstance(request.input, str)
        labels = request.input.split("sentiments ")[1]
        negative = [i for i, label in enumerate(eval_list(labels)) if label == "negative"]
        response.data = {"summary": f"{len(negative)} reviews need a reply",
                         "negative_indexes": negative}
    return response


def eval_list(text: str) -> list[str]:
    return [part.strip(" '[]") for part in text.split(",")]


REVIEWS = [
    "Great blender, fast shipping, would recommend to everyone.",
    "The handle broke after a week and support was terrible. I want a refund.",
    "Does what it says. Packaging was fine.",
    "Worst purchase this year, arrived late and disappointed the whole family.",
]


def main() -> None:
    engine = DagEngine(plugin=ReviewPipeline(),
                       providers={"offline": offline_provider(answer_with_overview)},
                       execution={"concurrency": 8})
    print(engine.export_graph_dot())
    result = engine.run(REVIEWS)
    print("overview:", result.global_results["overview"].data["summary"])
    for dropped in result.dropped_sections:
        print(f"  no reply needed ({dropped.results['sentiment'].data['sentiment']}): "
              f"{dropped.section.content[:50]}")
    for section in result.sections:
        print(f"  reply drafted for: {section.section.content[:50]}")
    costs = result.costs
    assert costs is not None
    for name, cost in costs.by_dimension.items():
        print(f"  {name:<10} {cost.calls} calls  {cost.tokens.total_tokens:>5} tokens")


if __name__ == "__main__":
    main()
