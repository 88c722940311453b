"""Allow ``python -m gradchain``."""

from .cli import main

raise SystemExit(main())
