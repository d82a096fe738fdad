"""``python -m syft_magics``: the command line (see :mod:`syft_magics.cli`)."""
from .ui.cli import main

raise SystemExit(main())
