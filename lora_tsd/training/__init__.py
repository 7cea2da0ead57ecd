"""The training runtime: the loop (loop.py), one grid cell (cell.py), checkpoints
(checkpoint.py), data-parallel collectives (collectives.py) and the torchrun launcher
(launch.py), analysis arrays (analysis.py). It imports nothing from the workflow glue
(pipeline/). Deliberately empty, so importing one module does not import, or hash, the others."""
