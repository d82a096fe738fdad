"""What ``client.search()`` returns: the pointers found, a list that says why when it is empty."""
from __future__ import annotations

from typing import Any, Iterable, List, Tuple

from .pointer import PointerTensor


class SearchResult(list):
    """The pointers a search found (a list), with a helpful message when it is empty."""

    def __init__(self, pointers: Iterable[PointerTensor], worker: str, tags: Tuple[str, ...],
                 available: List[str]) -> None:
        super().__init__(pointers)
        self.worker, self.tags, self.available = worker, tags, available

    def _empty_message(self) -> str:
        have = ", ".join(self.available) or "none"
        return f"no object on {self.worker} is tagged {' '.join(self.tags)} (tags there: {have})"

    def __getitem__(self, index: Any) -> Any:
        if not self and isinstance(index, int):
            raise IndexError(self._empty_message())
        return super().__getitem__(index)

    def __repr__(self) -> str:
        return super().__repr__() if self else f"[]  # {self._empty_message()}"


__all__ = ["SearchResult"]
