"""`python -m server` is the `orders` CLI."""

from server.cli import main

raise SystemExit(main())
