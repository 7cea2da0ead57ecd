"""Results: comparison tables (tables), per-item uncertainty and paired tests (stats, items),
and the figures drawn from a grid's records (plots)."""
from .tables import (DIVERGED, FLAGS, MISSING, ROW, expected_seeds, family_table, load_records,  # noqa: F401
                     mark_faults, summarise, to_markdown, with_averages, write)
