"""``python -m pipelines`` is the same as the ``rayline`` command."""

from pipelines.cli import main

raise SystemExit(main())
