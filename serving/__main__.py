"""`python -m serving ...` is the `carpool` command."""

from serving.cli import main

raise SystemExit(main())
