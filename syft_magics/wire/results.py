"""One encoding of an op's result tree, shared by the client and the worker.

A result is a pytree (``torch.utils._pytree``): its structure (a ``TreeSpec``: tuples, lists,
``torch.return_types`` structseqs, dicts) and its leaves, in ``tree_flatten`` order. Each leaf
is described as one of

* ``("T", shape, dtype, requires_grad, is_leaf)``: a new tensor (the client picks or is told its id);
  ``shape`` is ``None`` when the owner withholds it (it depends on the owner's values); ``is_leaf``
  is torch's autograd rule for it (``False`` where it has a ``grad_fn``), which ``ptr.is_leaf`` answers;
* ``("in", k)``: the op returned its k-th pointer input again (in-place ops), client side only;
* ``("V", value)``: a plain value (``x.size()``); on the wire its value is never sent.

The client infers a :class:`Tree` locally for most ops (:mod:`syft_magics.scientist.inference`);
for the others the worker describes what came out (:func:`describe`) in this same form, and
:func:`from_wire` reads it back. Both are turned into pointers by the same code.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils import _pytree as pytree

from ..errors import ProtocolError
from .protocol import DTYPES, dtype_name

#: The deepest result tree read from the wire, and the most leaves (a worker is not trusted blindly).
MAX_DEPTH = 16
MAX_LEAVES = 4096
#: The longest text a description carries (an optimizer's options: a few hundred characters), and the ops whose
#: described result is text (the client reads text from no other: a worker cannot hand it strings for ``ptr.grad``).
MAX_TEXT = 1 << 16
TEXT_OPS = frozenset({"syft.optim_settings"})

Leaf = Tuple[Any, ...]


def _is_leaf(obj: Any) -> bool:
    # torch.Size is a tuple subclass pytree would open; for a result it is one value
    return type(obj) is torch.Size


_LEAF = pytree.treespec_leaf()


def autograd_leaf(t: torch.Tensor) -> Optional[bool]:
    """``t.is_leaf``, or None where torch refuses to answer: a view made under ``no_grad`` whose base was
    written in place since (torch then raises for any autograd question about it, and for any op on it
    with grad mode on). Such a tensor has no usable graph: it is neither a node nor a leaf of one."""
    try:
        return t.is_leaf
    except RuntimeError:
        return None


def flatten(result: Any) -> Tuple[List[Any], pytree.TreeSpec]:
    """The leaves of a result, in order, and its structure."""
    if isinstance(result, torch.Tensor):  # most ops: one tensor (the worker's hot path)
        return [result], _LEAF
    return pytree.tree_flatten(result, is_leaf=_is_leaf)


class Tree:
    """A result's structure and the description of each leaf (see the module docstring)."""

    __slots__ = ("spec", "leaves", "single", "has_tensors")

    def __init__(self, spec: pytree.TreeSpec, leaves: Sequence[Leaf]) -> None:
        self.spec = spec
        self.leaves = tuple(leaves)
        #: the result is one leaf (most ops): built without a tree
        self.single = spec.is_leaf()
        #: whether the result holds any tensor (new or a returned input); trees are cached, so set once
        self.has_tensors = any(leaf[0] in ("T", "in") for leaf in self.leaves)

    @property
    def is_none(self) -> bool:
        """Whether the result is ``None`` (a side effect: ``backward``, ``retain_grad``)."""
        return self.single and self.leaves == (("V", None),)

    def out_ids(self, new_id: Callable[[], bytes]) -> List[Optional[bytes]]:
        """One id per leaf: a fresh one for each new tensor, ``None`` for the others."""
        if self.single:
            return [new_id() if self.leaves[0][0] == "T" else None]
        return [new_id() if leaf[0] == "T" else None for leaf in self.leaves]

    def build(self, make: Callable[[Leaf], Any]) -> Any:
        """The result, each leaf made by ``make``."""
        if self.single:
            return make(self.leaves[0])
        return pytree.tree_unflatten([make(leaf) for leaf in self.leaves], self.spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tree) and self.spec == other.spec and self.leaves == other.leaves

    def __hash__(self) -> int:
        return hash(self.leaves)

    def __repr__(self) -> str:
        return f"Tree({self.spec}, {self.leaves})"


def tree_of(result: Any, leaf: Callable[[Any], Leaf]) -> Tree:
    """The :class:`Tree` of a result, each leaf described by ``leaf``."""
    leaves, spec = flatten(result)
    return Tree(spec, [leaf(x) for x in leaves])


@contextlib.contextmanager
def quiet_tracing() -> Iterator[None]:
    """Silence torch's loggers while an op is traced under ``FakeTensorMode`` to learn its result: a
    failure there is an answer (an error, or a shape that depends on values), not news for the user."""
    loggers = [logging.getLogger(n) for n in ("torch._subclasses.fake_tensor", "torch.fx.experimental.symbolic_shapes")]
    before = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    try:
        yield
    finally:
        for lg, was in zip(loggers, before):
            lg.disabled = was


# -- the wire form ---------------------------------------------------------------------------
def describe(result: Any, ids: Sequence[Optional[bytes]], shown: Optional[Sequence[bool]] = None,
             text: bool = False) -> list:
    """The wire description of an op's result: ``[structure, leaves]``; a tensor leaf is
    ``["T", id, shape or None, dtype, requires_grad, is_leaf]`` and any other leaf ``["V"]`` (no value), or
    ``["V", text]`` for a string where ``text`` (the op's values are the client's own: an optimizer's
    options). ``shown``: which leaves' shapes may be told (``None``: all)."""
    leaves, spec = flatten(result)
    out = []
    for i, (oid, x) in enumerate(zip(ids, leaves)):
        if isinstance(x, torch.Tensor):
            show = shown is None or (i < len(shown) and shown[i])
            out.append(["T", oid, list(x.shape) if show else None, dtype_name(x.dtype), x.requires_grad,
                        autograd_leaf(x) is not False])
        else:
            out.append(["V", x] if text and type(x) is str and len(x) <= MAX_TEXT else ["V"])
    return [spec_to_wire(spec), out]


def spec_to_wire(spec: pytree.TreeSpec) -> Any:
    """A TreeSpec as plain msgpack data: ``0`` for a leaf, ``[type, keys, children]`` for a node."""
    if spec.is_leaf():
        return 0
    t: Any = spec.type
    if t is list or t is tuple:
        name, keys = t.__name__, None
    elif t is dict:
        name, keys = "dict", list(spec.context)
    elif pytree.is_structseq_class(t) and getattr(torch.return_types, getattr(t, "__name__", ""), None) is t:
        name, keys = f"return_types.{getattr(t, '__name__', '')}", None
    else:  # a namedtuple, an OrderedDict...: its items, as a tuple
        name, keys = "tuple", None
    return [name, keys, [spec_to_wire(c) for c in spec.children()]]


def from_wire(desc: Any, text: bool = False) -> Tuple[Tree, List[Optional[bytes]]]:
    """A worker's description read back: the :class:`Tree` and the id of each leaf; ``text``: the op is one of
    :data:`TEXT_OPS`, whose result is one string, given."""
    if not isinstance(desc, list) or len(desc) != 2 or not isinstance(desc[1], list):
        raise ProtocolError("malformed result description from the worker")
    spec = _spec_from_wire(desc[0], 0)
    leaves: List[Leaf] = []
    ids: List[Optional[bytes]] = []
    for item in desc[1]:
        if isinstance(item, list) and len(item) in (5, 6) and item[0] == "T" and isinstance(item[1], bytes):
            shape = None if item[2] is None else tuple(int(s) for s in item[2])
            # (a worker of before is_leaf was described: an op's output has a grad_fn if it requires grad)
            leaf = bool(item[5]) if len(item) == 6 else not item[4]
            leaves.append(("T", shape, wire_dtype(item[3]), bool(item[4]), leaf))
            ids.append(item[1])
        else:
            leaves.append(("V", None))
            ids.append(None)
    if len(leaves) != spec.num_leaves or len(leaves) > MAX_LEAVES:
        raise ProtocolError("result description from the worker does not match its structure")
    if text:
        item = desc[1][0] if len(desc[1]) == 1 and spec.is_leaf() else None
        if not (isinstance(item, list) and len(item) == 2 and item[0] == "V" and type(item[1]) is str
                and len(item[1]) <= MAX_TEXT):
            raise ProtocolError("the worker did not describe its answer as one text")
        leaves = [("V", item[1])]
    return Tree(spec, leaves), ids


def _spec_from_wire(node: Any, depth: int) -> pytree.TreeSpec:
    if node == 0:
        return pytree.treespec_leaf()
    if depth > MAX_DEPTH or not isinstance(node, list) or len(node) != 3 or not isinstance(node[2], list):
        raise ProtocolError("malformed result structure from the worker")
    name, keys, children = node
    specs = [_spec_from_wire(c, depth + 1) for c in children]
    if name in ("tuple", "list"):
        return pytree.TreeSpec(tuple if name == "tuple" else list, None, specs)
    if name == "dict" and isinstance(keys, list) and len(keys) == len(specs):
        return pytree.TreeSpec(dict, list(keys), specs)
    if isinstance(name, str) and name.startswith("return_types."):
        t = getattr(torch.return_types, name.split(".", 1)[1], None)
        if t is not None and pytree.is_structseq_class(t):
            return pytree.TreeSpec(t, None, specs)
    raise ProtocolError(f"unknown result structure {str(name)[:40]!r} from the worker")


def wire_dtype(name: str) -> torch.dtype:
    """The dtype a worker named (only those the wire carries)."""
    try:
        return DTYPES[name]
    except (KeyError, TypeError):
        raise ProtocolError(f"unknown dtype {str(name)[:40]!r} from the worker") from None
