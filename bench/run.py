"""Runs parkspot's benchmarks: ``.venv/bin/python bench/run.py [--scenarios S2,S3] [--quick]``.

Writes bench/results/latest.json and prints the Markdown table the README quotes; see
bench/README.md. (This file only puts the repository on the import path; the work is in
bench/main.py.)
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.main import main

    raise SystemExit(main())
