"""A read-only snapshot of a worker's objects for the owner (``worker.objects``): a table in a notebook."""
from __future__ import annotations

import time
from typing import Iterator, List, Mapping, Tuple

from ..display import esc, html_row, html_table, human_bytes, table
from .store import Entry


class Registry(Mapping[str, Entry]):
    """A read-only snapshot of a worker's objects, hex id -> :class:`Entry`, for display."""

    def __init__(self, name: str, entries: List[Entry]) -> None:
        self._name = name
        self._entries = {e.hex: e for e in sorted(entries, key=lambda e: e.created)}

    def __getitem__(self, key: str) -> Entry:
        return self._entries[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def by_tag(self, tag: str) -> List[Entry]:
        return [e for e in self._entries.values() if tag in e.tags]

    def _rows(self) -> List[Tuple[object, ...]]:
        return [(e.hex[:8], " ".join(e.tags), tuple(e.shape), e.dtype, human_bytes(e.nbytes), e.origin,
                 time.strftime("%H:%M:%S", time.localtime(e.created))) for e in self._entries.values()]

    _HEADERS = ("id", "tags", "shape", "dtype", "bytes", "origin", "created")

    def __repr__(self) -> str:
        if not self._entries:
            return f"{self._name} holds no objects"
        return f"{self._name} holds {len(self)} objects\n" + table(self._HEADERS, self._rows())

    def _repr_html_(self) -> str:
        return (f"<b>{esc(self._name)}</b> holds {len(self)} objects"
                + html_table(self._HEADERS, [html_row(cells) for cells in self._rows()]))
