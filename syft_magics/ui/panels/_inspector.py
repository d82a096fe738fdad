"""The owner's panel, Registry tab: choose an object, see the owner's card for it (:mod:`..owner_card`).

A dropdown of the objects the registry shows, and a box for the card; the card is built when an
object is chosen, never before.
"""
from __future__ import annotations

from typing import Any, List, Tuple

import ipywidgets as widgets

from ._refresh import close_tree

__all__ = ["RegistryInspector"]

_NONE = ("choose an object…", "")


class RegistryInspector(widgets.VBox):
    """``Inspect [object ▾]`` and, once one is chosen, its owner's card."""

    def __init__(self, worker: Any) -> None:
        super().__init__()
        self.worker = worker
        self.choice = widgets.Dropdown(description="Inspect", options=[_NONE], value="",
                                       layout=widgets.Layout(width="420px"))
        self.choice.add_class("syft-inspect-choice")
        self.card_box = widgets.VBox()
        self.choice.observe(lambda change: self.show(change["new"]), "value")
        self.children = [self.choice, self.card_box]
        self.add_class("syft-inspector")

    def update(self, entries: List[Any]) -> None:
        """Offer these entries (the registry's rows); keeps the choice while its object is there."""
        options: List[Tuple[str, str]] = [_NONE] + [
            (f"{e.label}  {tuple(e.shape)} {e.dtype}", e.hex) for e in entries]
        if [o[1] for o in options] == [o[1] for o in self.choice.options]:
            return
        keep = self.choice.value if any(o[1] == self.choice.value for o in options) else ""
        with self.choice.hold_trait_notifications():
            self.choice.options = options
            self.choice.value = keep
        if not keep:
            self.show("")

    def show(self, hexid: str) -> None:
        """Show the owner's card of object ``hexid`` ("" clears it)."""
        from ..owner_card import OwnerCard

        for child in list(self.card_box.children):
            close_tree(child)
        try:
            entry = self.worker.store.get(bytes.fromhex(hexid)) if hexid else None
        except ValueError:
            entry = None
        self.card_box.children = [OwnerCard(self.worker, entry)] if entry is not None else []

    @property
    def card(self) -> Any:
        """The card shown now, or ``None``."""
        return self.card_box.children[0] if self.card_box.children else None
