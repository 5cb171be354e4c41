"""`python -m dagengine.cli ...` is the `dagengine` command too."""

import sys

from . import main

sys.exit(main())
