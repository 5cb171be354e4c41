"""What the scheduler hands a call: where it belongs, and the concurrency slot it holds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from .plugin import HookContext
from .types import Dimension, DimensionResult, Section


class Slot:
    """The concurrency slot a work item holds; given back while the item waits to retry."""

    __slots__ = ("_semaphore", "held")

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore = semaphore
        self.held = False

    async def acquire(self) -> None:
        await self._semaphore.acquire()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._semaphore.release()

    async def pause(self, seconds: float) -> None:
        self.release()
        if seconds > 0:
            await asyncio.sleep(seconds)
        await self.acquire()


@dataclass(slots=True)
class CallSite:
    """Where a call belongs: one dimension over one section (or over all, for a global one)."""

    dimension: Dimension
    sections: list[Section]
    section_index: int | None
    total_sections: int
    dependencies: dict[str, DimensionResult]

    @property
    def name(self) -> str:
        return self.dimension.name

    @property
    def is_global(self) -> bool:
        return self.dimension.is_global

    def context(self, process_id: str, **fields: Any) -> HookContext:
        """The hook context of this call, with `fields` added."""
        return HookContext(
            process_id=process_id, dimension=self.name, is_global=self.is_global,
            sections=self.sections, section=None if self.is_global else self.sections[0],
            section_index=self.section_index, total_sections=self.total_sections,
            dependencies=self.dependencies, **fields,
        )
