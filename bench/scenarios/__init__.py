"""Every scenario bench/run.py knows, in the order they run. A new scenario is a module here
with a ``SCENARIO`` and one line in ``all_scenarios``."""

from bench.scenarios.registry import Scenario


def all_scenarios() -> dict[str, Scenario]:
    from bench.scenarios import (
        s1_cached_reads,
        s2_booking,
        s3_conflict_storm,
        s4_device_events,
        s5_sse_fanout,
        s6_ws_fanout,
        s7_reconnect_storm,
        s8_stalled_subscriber,
        s9_soak,
    )

    return {
        s.id: s
        for s in (
            s1_cached_reads.SCENARIO,
            s2_booking.SCENARIO,
            s3_conflict_storm.SCENARIO,
            s4_device_events.SCENARIO,
            s5_sse_fanout.SCENARIO,
            s6_ws_fanout.SCENARIO,
            s7_reconnect_storm.SCENARIO,
            s8_stalled_subscriber.SCENARIO,
            s9_soak.SCENARIO,
        )
    }
