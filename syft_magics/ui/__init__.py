"""What people see and type: IPython magics, the command line, and the live ipywidgets panels.

- :mod:`.magics`: ``%syft_worker``, ``%syft_connect``, ``%syft_share``, ...
- :mod:`.cli`: ``python -m syft_magics worker | demo``
- :mod:`.panels`: the owner's and the scientist's live panels

Imported lazily by the other sides (a panel is built only when asked for).
"""
