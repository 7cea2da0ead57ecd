"""The published reference leaderboard and a fresh run's comparison with it: stamp.py writes a
finished grid's leaderboard with what produced it and a hash of every record's per-item scores,
compare.py checks a run against it cell by cell, readme.py renders the README's tables from it.
CLI: python -m lora_tsd.aggregate.published {publish,compare,readme} (see __main__.py)."""
