"""parkspot's benchmark harness: each scenario's figure as a ratio to a ceiling measured in
the same run on the same machine. Entry point: ``bench/run.py``; see ``bench/README.md``."""
