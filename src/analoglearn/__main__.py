"""``python -m analoglearn ...`` (what ``torchrun -m analoglearn train ...`` runs): the ``analoglearn`` command."""

from .cli import main

raise SystemExit(main())
