"""Workflow glue, imported only by workflow/ (and the tests): config checks (config.py), code
hashes (codehash.py), the run-folder contract (contract.py), job sizing (sizing.py), hub
downloads (hub.py), embedded assets (assets.py), GPU slots (gpu_slots.py), and the config
schemas (schemas/, package data). Deliberately empty."""
