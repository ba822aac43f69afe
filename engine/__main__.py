"""``python -m engine``: the ``tickflow`` command."""

from engine.service.cli import main

raise SystemExit(main())
