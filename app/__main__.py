"""``python -m app`` is the same as the ``feedback`` command."""

from app.cli import main

raise SystemExit(main())
