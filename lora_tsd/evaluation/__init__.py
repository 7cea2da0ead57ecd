"""Scoring: protocol names and lm-eval task YAMLs (protocols.py), scoring a cell or the base
model (scoring.py), IFEval's checks (ifeval.py), GLUE's metric script (metrics/).
Deliberately empty, so importing one module does not import, or hash, the others."""
