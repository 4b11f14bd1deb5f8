"""The run's display: one status line redrawn in place on a terminal (plain lines now and
then otherwise), and the summary at the end."""

import asyncio
import shutil
from collections import Counter
from collections.abc import Callable
from typing import TextIO

from parkspot.simulator.client import Tally

TTY_INTERVAL_SECONDS = 1.0
PLAIN_INTERVAL_SECONDS = 5.0
CLEAR_TO_END = "\x1b[K"


def clock(hour: float) -> str:
    minutes = int(hour * 60) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def status(tally: Tally, elapsed: float, hour: float) -> str:
    """The status line, most important first (a narrow terminal cuts its end off)."""
    return (
        f"{elapsed:6.1f}s  day {clock(hour)}  {rate(tally.requests, elapsed):5.1f} req/s  "
        f"errors {tally.errors}  refused {tally.refused} | {tally.actions} actions: "
        f"{tally.booked} booked, {tally.cancelled} cancelled, {tally.entries} in, "
        f"{tally.exits} out, {tally.sensor_reports} sensor, {tally.reads} reads"
    )


def counted(count: int, noun: str, counts: Counter[str]) -> str:
    """``12 entries (checked_in 9, unplanned 3)``."""
    detail = ", ".join(f"{reason} {n}" for reason, n in counts.most_common())
    text = f"{count} {noun}" if noun else str(count)
    return f"{text} ({detail})" if detail else text


def summary(tally: Tally, elapsed: float, hour: float) -> str:
    entries = Counter({k: n for k, n in tally.passages.items() if k in ("checked_in", "unplanned")})
    exits = tally.passages - entries
    return "\n".join(
        (
            f"Done after {elapsed:.1f} s (simulated time of day {clock(hour)}): "
            f"{tally.actions} actions, {tally.requests} requests "
            f"({rate(tally.requests, elapsed):.1f}/s).",
            f"  drivers   {tally.drivers} signed up",
            f"  bookings  {tally.booked} made, {tally.cancelled} cancelled",
            f"  gates     {counted(tally.entries, 'entries', entries)}, "
            f"{counted(tally.exits, 'exits', exits)}",
            f"  sensors   {tally.sensor_reports} reports",
            f"  reads     {tally.reads}",
            f"  refused   {counted(tally.refused, '', tally.refusals)}",
            f"  errors    {counted(tally.errors, '', tally.failures)}",
        )
    )


class Progress:
    """Writes to ``stream``; on a terminal the status line is redrawn in place."""

    def __init__(self, stream: TextIO, interval: float | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        default = TTY_INTERVAL_SECONDS if self.tty else PLAIN_INTERVAL_SECONDS
        self.interval = interval or default
        self._line_open = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _end_line(self) -> None:
        if self._line_open:
            self._write("\n")
            self._line_open = False

    def say(self, message: str) -> None:
        self._end_line()
        self._write(message + "\n")

    def show(self, tally: Tally, elapsed: float, hour: float) -> None:
        line = status(tally, elapsed, hour)
        if self.tty:
            width = shutil.get_terminal_size().columns
            self._write("\r" + line[: max(20, width - 1)] + CLEAR_TO_END)
            self._line_open = True
        else:
            self._write(line + "\n")

    async def follow(
        self, tally: Tally, elapsed: Callable[[], float], hour: Callable[[], float]
    ) -> None:
        """Shows the status every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            self.show(tally, elapsed(), hour())

    def finish(self, tally: Tally, elapsed: float, hour: float) -> None:
        if self.tty:
            self.show(tally, elapsed, hour)
        self._end_line()
        self._write(summary(tally, elapsed, hour) + "\n")
