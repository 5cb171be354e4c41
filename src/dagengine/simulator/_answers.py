"""Deterministic, useful answers and honest token counts: a function of the prompt text only.

The prompt text is the system prompt (if any) followed by the text of every message, in
order, joined with "\\n"; the same words give the same answer on all three APIs. The whole
text picks the task (email category, sentiment, topics, summary, or a generic answer); the
last message minus its instruction lines (those naming the task or JSON, and JSON templates)
is the material the answer is computed from.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from functools import lru_cache
from typing import Any

from ._schema import fit

SCHEMA_VIOLATION = '{"unexpected":true}'
MESSAGE_OVERHEAD_TOKENS = 3

_WORD = re.compile(r"\$\$\$|[a-z0-9]+(?:'[a-z]+)?")
_LABEL = re.compile(r"^\s*(?:[A-Za-z][A-Za-z -]{0,19}:\s+)+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def _vocab(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Lines carrying these are the task, not the material the task is about.
_INSTRUCTION_MARKERS = ("categor", "classif", "sentiment", "topic", "summar", "json")

# Category names are in their own lists so a prompt listing every category scores them all
# alike; the order of this dict breaks ties.
_EMAIL_WORDS: dict[str, frozenset[str]] = {
    "work": _vocab(
        "work meeting deadline project report client quarterly team agenda review manager "
        "schedule budget presentation sprint invoice proposal office colleague stakeholder "
        "contract roadmap standup slides attached kpi q1 q2 q3 q4 milestone deliverable "
        "onboarding hiring interview customer release board"
    ),
    "personal": _vocab(
        "personal mom dad mum birthday dinner weekend family love party vacation kids grandma "
        "grandpa wedding friend miss hug brunch movie holiday sister brother baby pizza bbq "
        "trip visit congrats cousin aunt uncle honey sweetie xoxo catch"
    ),
    "newsletter": _vocab(
        "newsletter unsubscribe weekly digest edition subscribe subscriber monthly roundup "
        "highlights articles preferences issue curated bulletin read"
    ),
    "spam": _vocab(
        "spam winner winning won prize free click urgent $$$ viagra lottery claim cash offer "
        "guaranteed congratulations million bonus reward crypto bitcoin casino inheritance "
        "wire verify suspended password selected exclusive deal discount limited act"
    ),
}
_POSITIVE = _vocab(
    "good great excellent love loved happy wonderful amazing fantastic best like enjoy enjoyed "
    "pleased awesome perfect nice recommend delighted glad superb brilliant satisfied thanks "
    "thank helpful fast beautiful"
)
_NEGATIVE = _vocab(
    "bad terrible awful hate hated poor worst disappointed disappointing angry sad horrible "
    "broken slow problem refund annoying useless fail failed unhappy waste rude never "
    "buggy crash crashed late wrong"
)
_STOPWORDS = _vocab(
    "the and for are but not you all any can had her was one our out has his how its may new "
    "now see who did get let put say she too use that with this have from they will would "
    "there their what about which when your been were than them then these some into just "
    "also more most only other such very should could over here where while each does "
    "please following text give list return respond answer main identify extract words "
    "prompt about email message content"
)


def prompt_key(text: str) -> str:
    """The /stats `prompts` key: sha256 of the UTF-8 prompt text, first 16 hex digits.

    `text` is the system prompt (if any) then the text of each message in order, all joined
    with "\\n" (a message made of several text blocks/parts contributes them joined with "\\n").
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def count_tokens(text: str) -> int:
    """The simulator's tokenizer: one token per four characters, rounded up."""
    return math.ceil(len(text) / 4)


def input_tokens(text: str, messages: int) -> int:
    """Prompt tokens: the text plus a small per-message overhead (the system prompt counts)."""
    return count_tokens(text) + MESSAGE_OVERHEAD_TOKENS * messages


def answer(text: str, last_message: str, schema: dict[str, Any] | None = None) -> str:
    """The model's reply as compact JSON, chosen by what the prompt asks for; with a `schema`
    (structured output) a value of that schema, the useful answer wherever it fits."""
    reply = _useful_answer(text, last_message)
    if schema is None:
        return reply
    return json.dumps(fit(schema, json.loads(reply)), separators=(",", ":"), ensure_ascii=False)


@lru_cache(maxsize=8192)
def _useful_answer(text: str, last_message: str) -> str:
    lowered = text.lower()
    material = _material(last_message)
    if ("categor" in lowered or "classif" in lowered) and (
        "email" in lowered or "e-mail" in lowered
    ):
        reply: dict[str, object] = _classify_email(material)
    elif "sentiment" in lowered:
        reply = _sentiment(material)
    elif "topic" in lowered:
        reply = {"topics": _topics(material)}
    elif "summar" in lowered:
        reply = {"summary": _first_sentence(material, 25)}
    else:
        reply = _generic(material)
    return json.dumps(reply, separators=(",", ":"))


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _hits(words: list[str], vocabulary: frozenset[str]) -> list[str]:
    # A plural counts as its singular ("meetings" -> "meeting").
    return [w for w in words if w in vocabulary or (w[-1] == "s" and w[:-1] in vocabulary)]


def _material(message: str) -> str:
    kept = [
        line
        for line in message.splitlines()
        if line.strip()
        and not line.lstrip().startswith(("{", "}", "[", "]", '"'))
        and not any(marker in line.lower() for marker in _INSTRUCTION_MARKERS)
    ]
    if kept:
        return "\n".join(kept)
    # A one-line "Do this: <material>" prompt: the material follows the first colon.
    return message.partition(":")[2].strip() or message


def _classify_email(material: str) -> dict[str, object]:
    words = _words(material)
    hits = {category: _hits(words, vocab) for category, vocab in _EMAIL_WORDS.items()}
    ranked = sorted(hits, key=lambda category: -len(hits[category]))
    best, runner_up = ranked[0], ranked[1]
    margin = len(hits[best]) - len(hits[runner_up])
    confidence = 0.4 if not hits[best] else min(0.99, 0.55 + 0.1 * margin)
    return {
        "category": best,
        "confidence": round(confidence, 2),
        "summary": _first_sentence(material, 12),
    }


def _sentiment(material: str) -> dict[str, object]:
    words = _words(material)
    positive, negative = len(_hits(words, _POSITIVE)), len(_hits(words, _NEGATIVE))
    score = 0.0 if positive + negative == 0 else (positive - negative) / (positive + negative)
    label = "positive" if score > 0.1 else "negative" if score < -0.1 else "neutral"
    return {"sentiment": label, "score": round(score, 2)}


def _topics(material: str, count: int = 3) -> list[str]:
    words = [w for w in _words(material) if len(w) >= 4 and w not in _STOPWORDS]
    frequency = Counter(words)
    first_seen = {w: i for i, w in reversed(list(enumerate(words)))}
    return sorted(frequency, key=lambda w: (-frequency[w], first_seen[w]))[:count]


def _generic(material: str) -> dict[str, object]:
    topics = _topics(material)
    about = f" about {', '.join(topics)}" if topics else ""
    count = len(_words(material))
    return {"answer": f"Simulated response to a {count}-word prompt{about}.", "words": count}


def _first_sentence(material: str, max_words: int) -> str:
    text = _LABEL.sub("", " ".join(material.split()), count=1)
    sentence = _SENTENCE_END.split(text, maxsplit=1)[0]
    words = sentence.split()
    if len(words) > max_words:
        return " ".join(words[:max_words]) + "..."
    return sentence
