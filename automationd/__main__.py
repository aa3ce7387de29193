"""`python -m automationd` is the same as the `automationd` command."""

from automationd.cli import main

raise SystemExit(main())
