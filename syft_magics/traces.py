"""Where in the user's code something happened: the user's line, named as IPython names it.

Errors point at the line that issued an op, not at the client, the link or torch's internals they
passed through. A notebook cell is named ``In [7], line 2`` (IPython keeps the map from the kernel's
temporary cell files to execution counts), any other file by its path.
"""
from __future__ import annotations

import linecache
import os
import sys
import traceback
from types import FrameType
from typing import List, Optional, Tuple

import torch

#: Frames in these folders are library frames: never the user's line.
LIBRARY_DIRS = (os.path.dirname(torch.__file__), os.path.dirname(os.path.abspath(__file__)))

Site = Tuple[str, int]


def is_library(filename: str) -> bool:
    """Whether ``filename`` belongs to torch or syft_magics."""
    return filename.startswith(LIBRARY_DIRS)


def user_site(skip: int = 1) -> Optional[Site]:
    """``(filename, line)`` of the innermost caller outside torch and syft_magics."""
    f: Optional[FrameType] = sys._getframe(skip)
    while f is not None:
        filename = f.f_code.co_filename
        if not filename.startswith(LIBRARY_DIRS):
            return filename, f.f_lineno
        f = f.f_back
    return None


def place(filename: str, lineno: int) -> str:
    """``In [7], line 2`` for a notebook cell, ``path:line`` for a file."""
    shell = _ipython()
    named = None
    if shell is not None:
        try:
            named = shell.compile.format_code_name(filename)
        except Exception:  # an older IPython, or a compiler without the map
            named = None
    if named:
        return f"{named[1].replace('In[', 'In [', 1)}, line {lineno}"
    return f"{filename}:{lineno}"


def describe(site: Site) -> str:
    """The place of ``site`` and its source line: ``In [7], line 2: z = x + y``."""
    source = linecache.getline(site[0], site[1]).strip()
    return place(*site) + (f": {source}" if source else "")


def user_traceback(exc: BaseException) -> List[str]:
    """The lines IPython shows for ``exc``: the user's frames only, then the error itself."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not is_library(f.filename)]
    lines = ["Traceback (most recent call last):"] if frames else []
    for frame in frames:
        lines.append(f"  {place(frame.filename, frame.lineno or 0)}")
        if frame.line:
            lines.append(f"    {frame.line.strip()}")
    lines.extend(f"{type(exc).__name__}: {exc}".split("\n"))
    return lines


def _ipython():
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    return get_ipython()
