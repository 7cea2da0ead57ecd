"""Results: comparison tables (tables.py), per-item uncertainty and paired tests (stats.py,
items.py, uncertainty.py), the reproduction table (reproduction.py), analysis files
(analysis.py) and figures (figures/). Deliberately empty, so importing one module does not
import, or hash, the others."""
