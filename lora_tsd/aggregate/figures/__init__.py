"""The figures of a grid (draw.py draws them all; style.py is what they share). Deliberately
empty, so importing one module does not import, or hash, the others."""
