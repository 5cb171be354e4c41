"""The run's input, taken as the run reaches it: the first call goes out while the rest of the
sections are still being read and converted.

`process(sections)` takes a list or tuple, any other iterable (a generator, a file's lines)
or an async iterable. A list or tuple is in memory already: each of its items is checked up
front, so a bad one still raises ValidationError before any call, and only the conversion of
plain strings into Sections waits until the run reaches them. Anything else is read in chunks
as the dispatcher needs more work, so it is never held whole (unless the run needs every
section at once: a global dimension, before_process_start, a store; see engine.process). A
bad item of a streamed input raises ValidationError when it is reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from .types import Section, check_sections_value, to_section

__all__ = ["CHUNK", "SectionFeed"]

CHUNK = 256  # sections converted between two looks at the event loop


class SectionFeed:
    """Sections in input order, converted on the way; `total` is known for a list or tuple."""

    def __init__(self, value: Any, where: str = "sections") -> None:
        self.where = where
        self._async: AsyncIterator[Any] | None = None
        self._sync: Iterator[Any] | None = None
        self._known: list[Any] | None = None
        self.taken = 0  # sections handed out so far
        # Told of each section as it is handed out (a store writing the input as it goes).
        self.on_read: Callable[[list[Section]], None] | None = None
        if isinstance(value, AsyncIterable) and not isinstance(value, Iterable):
            self._async = aiter(value)
            self.total: int | None = None
            return
        check_sections_value(value, where)
        if isinstance(value, (list, tuple)):
            self._known = _checked(value, where)
            self.total = len(self._known)
        else:
            self._sync = iter(value)
            self.total = None

    @classmethod
    def given(cls, sections: list[Section]) -> SectionFeed:
        """A feed of sections already converted and checked."""
        feed = cls(())
        feed._known, feed.total = sections, len(sections)
        return feed

    async def chunks(self, size: int = CHUNK) -> AsyncIterator[list[Section]]:
        """The remaining sections, `size` at a time, letting the loop run between chunks."""
        while chunk := await self.next_chunk(size):
            yield chunk
            await asyncio.sleep(0)

    async def next_chunk(self, size: int = CHUNK) -> list[Section]:
        """Up to `size` more sections; an empty list once the input is exhausted."""
        start = self.taken
        if self._known is not None:
            part = self._known[start:start + size]
            chunk = [item if isinstance(item, Section) else Section(content=item)
                     for item in part]
        elif self._sync is not None:
            chunk = []
            for item in self._sync:
                chunk.append(to_section(item, f"{self.where}[{start + len(chunk)}]"))
                if len(chunk) == size:
                    break
        else:
            assert self._async is not None
            chunk = []
            async for item in self._async:
                chunk.append(to_section(item, f"{self.where}[{start + len(chunk)}]"))
                if len(chunk) == size:
                    break
        self.taken += len(chunk)
        if self.on_read is not None and chunk:
            self.on_read(chunk)
        return chunk

    def rest_of_list(self) -> list[Section]:
        """The sections of a list or tuple not handed out yet, all at once (none for a
        stream, whose unread items are never read for it)."""
        if self._known is None:
            return []
        part, self.taken = self._known[self.taken:], len(self._known)
        rest = [item if isinstance(item, Section) else Section(content=item) for item in part]
        if self.on_read is not None and rest:
            self.on_read(rest)
        return rest

    def first(self, count: int) -> list[Section]:
        """The first `count` sections of a list or tuple, converted, without handing them
        out (none for a stream)."""
        part = self._known[:count] if self._known is not None else []
        return [item if isinstance(item, Section) else Section(content=item) for item in part]

    def item(self, index: int) -> Section:
        """Section `index` of a list or tuple, converted."""
        assert self._known is not None
        item = self._known[index]
        return item if isinstance(item, Section) else Section(content=item)

    async def all(self) -> list[Section]:
        """Every remaining section, as one list."""
        items: list[Section] = []
        async for chunk in self.chunks(4096):
            items.extend(chunk)
        return items

    @property
    def exhausted(self) -> bool:
        return self._known is not None and self.taken >= len(self._known)


def _checked(items: list[Any] | tuple[Any, ...], where: str) -> list[Any]:
    """The items as Sections or plain strings (converted when reached): all checked now."""
    return [item if type(item) is str or isinstance(item, Section)
            else to_section(item, f"{where}[{index}]") for index, item in enumerate(items)]
