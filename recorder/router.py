"""``python -m recorder.router``: the recorder process's entry point, kept at its old path (see recorder/service/router.py)."""

import sys

from .service.router import main

if __name__ == "__main__":
    sys.exit(main())
