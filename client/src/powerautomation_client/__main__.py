"""`python -m powerautomation_client` is the `powerautomation` command."""

from powerautomation_client.cli import main

raise SystemExit(main())
