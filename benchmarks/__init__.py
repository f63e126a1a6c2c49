"""Benchmarks of `recorder`, run as ``python -m benchmarks <case> [options]``.

Each case module ``benchmarks/<name>.py`` exposes ``add_parser(subparsers)``
and is listed in ``CASES`` in ``benchmarks/__main__.py``. A case runs every
measurement in a fresh subprocess that prints one JSON line, writes all
results to ``benchmarks/results/`` (gitignored) and prints a Markdown table.
"""
