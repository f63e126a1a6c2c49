"""Publication of sealed segments into shared Delta Lake tables, off the acknowledgement path.

``_state`` (no deltalake import) is what the recorder process and ``stats``
read; ``_table`` turns a segment into the rows a table takes; ``_lake``
talks to Delta Lake; ``_publisher`` is the loop of the publisher process and
of ``recorder publish``; ``_check`` compares tables with the local catalog;
``_seaweed`` runs a local SeaweedFS S3 server (tests, demo, benchmark).
"""
