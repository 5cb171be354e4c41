"""`python -m dagengine.simulator --help`"""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
