"""The command line of bench/run.py: pick scenarios, run them one after another, write the
results file and print the table."""

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import (
    DEFAULT_PG_URL,
    ROOT,
    BenchConfig,
    ScenarioResult,
    background_cores,
    git_info,
    log,
    machine_info,
    markdown_table,
    require_tool,
)
from bench.scenarios import all_scenarios

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "latest.json"


def build_parser(known: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Run parkspot's benchmarks; every figure is a ratio to a ceiling "
        "measured in the same run on the same machine.",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(known),
        help=f"comma-separated ids to run (default: all: {','.join(known)})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs, for a smoke check (figures are rough)"
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("PARKSPOT_BENCH_DATABASE_URL", DEFAULT_PG_URL),
        help="a PostgreSQL server to create the bench databases on "
        "(default: $PARKSPOT_BENCH_DATABASE_URL or %(default)s)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("PARKSPOT_BENCH_REDIS_URL"),
        help="Redis for scenarios that run with it (default: $PARKSPOT_BENCH_REDIS_URL)",
    )
    parser.add_argument(
        "--soak-seconds",
        type=_positive_int,
        default=None,
        help="how long S9 (the soak) runs (default: 600; with --quick: 60)",
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="results file (default: %(default)s)"
    )
    parser.add_argument(
        "--keep-work", action="store_true", help="keep the scratch folder (server logs)"
    )
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    scenarios = all_scenarios()
    args = build_parser(list(scenarios)).parse_args(argv)
    wanted = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in scenarios]
    if unknown:
        sys.stderr.write(f"unknown scenario(s): {', '.join(unknown)}; known: {list(scenarios)}\n")
        return 2
    if {"S2", "S4"} & set(wanted):  # their ceilings
        require_tool("pgbench")
    parkspot = Path(sys.executable).parent / "parkspot"
    if not parkspot.exists():
        sys.stderr.write(f"{parkspot} not found: run this with the project's .venv/bin/python\n")
        return 2
    work_dir = Path(tempfile.mkdtemp(prefix="parkspot-bench-"))
    config = BenchConfig(
        quick=args.quick,
        pg_url=args.pg_url,
        redis_url=args.redis_url,
        work_dir=work_dir,
        soak_seconds=args.soak_seconds,
    )
    started = datetime.now(UTC)
    background = background_cores()
    if background > 0.25:
        log(f"the machine is already busy ({background:.2f} cores): figures will be noisy")
    try:
        results = asyncio.run(_run_all(config, [scenarios[s] for s in wanted]))
    finally:
        if args.keep_work:
            log(f"scratch folder kept: {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    document: dict[str, Any] = {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "quick": args.quick,
        "command": ["bench/run.py", *(argv if argv is not None else sys.argv[1:])],
        "git": git_info(),
        "machine": machine_info() | {"background_cpu_cores_before_run": background},
        "scenarios": [r.as_dict() for r in results],
    }
    _write(args.output, document)
    log(f"results written to {args.output}")
    sys.stdout.write(markdown_table(results) + "\n")
    for r in results:
        for note in r.notes:
            sys.stdout.write(f"\n{r.id}: {note}")
    sys.stdout.flush()
    return 1 if any(r.error for r in results) else 0


async def _run_all(config: BenchConfig, chosen: Sequence[Any]) -> list[ScenarioResult]:
    results = []
    for scenario in chosen:
        log(f"{scenario.id}: {scenario.title}{' (quick)' if config.quick else ''}")
        try:
            result = await scenario.run(config)
        except Exception as exc:
            traceback.print_exc()
            result = ScenarioResult(
                id=scenario.id,
                scenario=scenario.title,
                result="",
                target="",
                met=False,
                error=f"{type(exc).__name__}: {exc}".splitlines()[0][:200],
            )
        log(f"{scenario.id}: {'met' if result.met else 'NOT met'} - {result.result}")
        results.append(result)
    return results


def _write(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)
