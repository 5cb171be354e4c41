"""`python -m dagengine ...` is the `dagengine` command."""

import sys

from .cli import main

sys.exit(main())
