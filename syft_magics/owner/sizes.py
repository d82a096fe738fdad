"""Which withheld sizes are known to be the same size, for any data.

Each withheld dimension of an object carries a key (``Provenance.keys``). Two sizes with one key are equal
whatever the owner's values: rows picked by one mask (``x[m]`` and ``y[m]``, the count of ``m``'s true
elements while ``m`` is unchanged), or a dimension an op kept (``x[m].sum(1)``). A trace gives sizes with one
key one symbol (see :mod:`.fake_trace`), so ``mse_loss(x[m], y[m])`` is traced; sizes not known to be equal
are distinct symbols, so an op that needs them equal (``a * b`` of rows picked by two filters) cannot be
traced and is refused before it runs: it failed exactly when the counts differed, and comparing the counts
of two thresholds read a column's values.
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, AbstractSet, Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch

from .fake_trace import HiddenShape, Origin

if TYPE_CHECKING:
    from .store import Entry

#: What identifies a withheld size: equal keys, equal sizes.
Key = Any

_fresh = itertools.count()


def keys_of(entry: "Entry", free: Tuple[int, ...]) -> Tuple[Key, ...]:
    """The keys of an object's withheld dimensions ``free``: those its provenance recorded, else one of its own
    per dimension."""
    keys = entry.provenance.keys
    if len(keys) == len(free):
        return keys
    return tuple(("entry", entry.serial, i) for i in free)


def numbered(hidden: Iterable[Tuple[int, Tuple[int, ...], Tuple[int, ...], Tuple[Key, ...]]]
             ) -> Tuple[Dict[int, HiddenShape], List[Key]]:
    """The withheld shapes of an op's inputs as a trace sees them, from ``(id(tensor), bounds, free, keys)``:
    each key a symbol number, in order of appearance (what the trace depends on: not the keys themselves);
    and the key of each number."""
    number: Dict[Key, int] = {}
    shapes: Dict[int, HiddenShape] = {}
    for ident, bounds, free, keys in hidden:
        shapes[ident] = (bounds, free, tuple(number.setdefault(k, len(number)) for k in keys))
    return shapes, list(number)


def result_keys(origins: Tuple[Origin, ...], by_number: List[Key], counted: Callable[[int], Optional[Key]]
                ) -> Tuple[Key, ...]:
    """The keys of a result's withheld dimensions, from where the trace found they come from (``counted``:
    the key of the count of true elements of the op's input leaf ``j``, None if it has none)."""
    keys: List[Key] = []
    for origin in origins:
        key = None
        if origin[0] == "in" and origin[1] < len(by_number):
            key = by_number[origin[1]]
        elif origin[0] == "count":
            key = counted(origin[1])
        keys.append(key if key is not None else ("new", next(_fresh)))
    return tuple(keys)


def count_key(entry: "Entry") -> Key:
    """The key of the count of ``entry``'s true (nonzero) elements: its own while it is not written (by its
    serial, not its id, which its client may give again to another tensor)."""
    return ("count", entry.serial, entry.version)


# -- an object's withheld shape (its provenance: see .provenance; the owner's shared data withholds none) ----------
def withheld_of(entry: "Entry") -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """An object's shape as a trace may see it: its public bounds, and which dimensions are withheld."""
    prov = entry.provenance
    if prov.hidden and prov.bounds is not None:
        return prov.bounds, prov.free
    shape = tuple(entry.tensor.shape) if isinstance(entry.tensor, torch.Tensor) else ()
    return shape, tuple(range(len(shape))) if prov.hidden else ()  # (no bounds recorded: every dimension)


def withheld_shape(entry: "Entry") -> bool:
    """Whether a tensor's shape has a dimension the client does not know."""
    return entry.provenance.hidden and isinstance(entry.tensor, torch.Tensor) and bool(withheld_of(entry)[1])


def bounds_of(entry: "Entry") -> Tuple[int, ...]:
    """The public upper bound of an object's shape: its shape where the client may know it."""
    return withheld_of(entry)[0]


def withheld_inputs(used: List["Entry"]) -> Tuple[Dict[int, HiddenShape], List[Key]]:
    """The withheld shapes of an op's inputs as its trace sees them, and the key of each symbol number."""
    def shape(e: "Entry") -> Tuple[int, Tuple[int, ...], Tuple[int, ...], Tuple[Key, ...]]:
        bounds, free = withheld_of(e)
        return id(e.tensor), bounds, free, keys_of(e, free)

    return numbered(shape(e) for e in used if e.provenance.hidden)


def owned_inputs(used: List["Entry"], withheld: Dict[int, HiddenShape]) -> AbstractSet[int]:
    """The ``id``s of the owner's tensors (and of those derived from them) among an op's inputs, when it reads a
    withheld shape (else none: nothing asks)."""
    return {id(e.tensor) for e in used if e.session is None or e.provenance.owner} if withheld else frozenset()
