"""``python -m recorder.publish``: the publisher process the supervisor starts."""

import sys

from ._service import main

sys.exit(main())
