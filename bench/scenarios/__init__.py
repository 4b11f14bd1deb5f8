"""Every scenario bench/run.py knows, in the order they run. A new scenario is a module here
with a ``SCENARIO`` and one line in ``all_scenarios``."""

from bench.scenarios.registry import Scenario


def all_scenarios() -> dict[str, Scenario]:
    from bench.scenarios import s2_booking, s3_conflict_storm

    return {s.id: s for s in (s2_booking.SCENARIO, s3_conflict_storm.SCENARIO)}
