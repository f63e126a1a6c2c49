"""Publication of sealed segments into shared Delta Lake tables, off the acknowledgement path.

``_state`` (no deltalake import) is what the recorder process and ``stats``
read; ``_table`` turns a segment into the rows a table takes; ``_lake``
talks to Delta Lake; ``_publisher`` is the loop of the publisher process and
of ``recorder publish``; ``_check`` compares tables with the local catalog;
``_seaweed`` runs a local SeaweedFS S3 server (tests, demo, benchmark);
``demo`` is ``recorder demo --fleet``.

The names below are what the rest of the package (the CLI) uses; none of
them imports deltalake, so the recorder runs without the fleet extra.
"""

from ._commands import add_commands, restore_publication
from ._state import load_state, lock_publication

__all__ = ["add_commands", "load_state", "lock_publication", "restore_publication"]
