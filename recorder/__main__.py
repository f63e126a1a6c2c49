"""``python -m recorder`` is the ``recorder`` command."""

import sys

from .cli import main

sys.exit(main())
