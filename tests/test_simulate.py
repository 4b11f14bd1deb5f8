"""`parkspot simulate` against a real server process: what its traffic leaves behind, as
the API shows it, and how the command refuses bad options and unreachable servers.

The runs go on until what a test waits for has happened (at most ``TRAFFIC_WAIT``), since a
shared machine may be slow: a few seconds at a high rate on small lots when it is not."""

import asyncio
import io
import os
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from parkspot.cli import main
from parkspot.config import get_settings
from parkspot.simulator import Options, Progress, Tally, simulate
from parkspot.simulator.world import GATE_NAME, SENSOR_NAME
from tests.conftest import PASSWORD
from tests.live_server import (
    PARKSPOT,
    Site,
    Stack,
    availability,
    free_port,
    make_site,
    single_server,
)

RATE = 25.0
DRIVERS = 4
SPOTS = 12
# The longest a run may take to show what a test waits for, and to end afterwards.
TRAFFIC_WAIT = 40.0
COMMAND_TIMEOUT = 30.0
POLL_SECONDS = 0.2


@pytest.fixture(scope="module")
async def shared(template: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """One server; each test makes an operator, a manager and lots of its own."""
    async with single_server(template, tmp_path_factory.mktemp("simulate")) as stack:
        yield stack


@pytest.fixture
def stack(shared: Stack) -> Iterator[Stack]:
    """The shared server; a test fails if the server logged an error meanwhile."""
    errors_before = len(shared.server.errors())
    yield shared
    assert shared.server.errors()[errors_before:] == []


@pytest.fixture
def cli_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`main()` reads the settings first; these tests need none of them."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("PARKSPOT_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def make_lots(stack: Stack) -> tuple[Site, Site]:
    """A public lot and a members-only lot (walk-ins only) of one operator and manager."""
    public = await make_site(stack.http, stack.database, SPOTS)
    members = await make_site(
        stack.http,
        stack.database,
        SPOTS // 2,
        operator_id=public.operator_id,
        manager=public.manager,
        visibility="members",
    )
    return public, members


async def get(stack: Stack, site: Site, path: str, **params: Any) -> dict[str, Any]:
    response = await stack.http.get(path, params=params, headers=site.manager.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class Watch(Progress):
    """The run's display as a test reads it: ``stop`` is set once ``done`` holds for the
    tally shown and the output so far."""

    def __init__(self, done: Callable[[Tally, str], bool]) -> None:
        self.output = io.StringIO()
        super().__init__(self.output, interval=POLL_SECONDS)
        self.done = done
        self.stop = asyncio.Event()

    def show(self, tally: Tally, elapsed: float, hour: float) -> None:
        super().show(tally, elapsed, hour)
        if self.done(tally, self.output.getvalue()):
            self.stop.set()


def options(site: Site, url: str, **changes: Any) -> Options:
    """A run as the site's manager, capped at ``TRAFFIC_WAIT``."""
    chosen: dict[str, Any] = {"duration": TRAFFIC_WAIT, "rate": RATE, "drivers": DRIVERS}
    return Options(
        url=url,
        manager_username=site.manager.username,
        manager_password=PASSWORD,
        **(chosen | changes),
    )


async def until(check: Callable[[], Awaitable[bool]], within: float) -> bool:
    """Polls ``check`` until it is true (True) or ``within`` seconds have passed (False)."""
    with anyio.move_on_after(within):
        while True:
            if await check():
                return True
            await asyncio.sleep(POLL_SECONDS)
    return False


async def test_simulate_command_until_ctrl_c_books_checks_in_and_reports_through_the_api(
    stack: Stack, tmp_path: Path
) -> None:
    public, members = await make_lots(stack)
    sites = (public, members)
    before = {
        site.lot_id: (await availability(stack.http, site.lot_id, site.manager.headers))["version"]
        for site in sites
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARKSPOT_")}
    process = await asyncio.create_subprocess_exec(
        str(PARKSPOT),
        "simulate",
        "--url",
        stack.server.base_url,
        "--duration",
        "0",
        "--rate",
        str(RATE),
        "--drivers",
        str(DRIVERS),
        "--seed",
        "7",
        "--start-hour",
        "8",
        "--manager-username",
        public.manager.username,
        "--manager-password-stdin",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    assert process.stdin is not None
    process.stdin.write(f"{PASSWORD}\n".encode())
    process.stdin.close()

    async def traffic_seen() -> bool:
        """A driver checked in by the gate; both lots' devices reported and moved the map."""
        if process.returncode is not None:
            return True
        arrived = await get(
            stack,
            public,
            "/api/v1/reservations",
            scope="managed",
            status=["checked_in", "completed"],
        )
        if not arrived["total"]:
            return False
        for site in sites:
            devices = (await get(stack, site, f"/api/v1/lots/{site.lot_id}/devices"))["items"]
            if not all(device["last_seen_at"] for device in devices):
                return False
            record = await availability(stack.http, site.lot_id, site.manager.headers)
            if record["version"] <= before[site.lot_id]:
                return False
        return True

    seen = await until(traffic_seen, TRAFFIC_WAIT)
    if process.returncode is None:
        # Ctrl-C: the running actions finish, then the summary.
        process.send_signal(signal.SIGINT)
    async with asyncio.timeout(COMMAND_TIMEOUT):
        out, err = await process.communicate()
    output = out.decode() + err.decode()
    assert seen, output
    assert process.returncode == 0, output
    assert "Simulating 25 actions/s until Ctrl-C" in output
    assert re.search(r"^  errors +0$", output, re.MULTILINE), output
    assert re.search(r"^  drivers +[1-4] signed up$", output, re.MULTILINE), output

    # What a manager sees: bookings of the public lot only (the other is members-only),
    # the run's sensor and gate on each lot, and occupancy taken from the sensor.
    booked = await get(stack, public, "/api/v1/reservations", scope="managed")
    assert booked["total"] > 0
    assert {r["lot_id"] for r in booked["items"]} == {public.lot_id}
    for site in sites:
        devices = (await get(stack, site, f"/api/v1/lots/{site.lot_id}/devices"))["items"]
        assert {(d["name"], d["kind"], d["status"]) for d in devices} == {
            (SENSOR_NAME, "spot_sensor", "active"),
            (GATE_NAME, "gate", "active"),
        }
        record = await availability(stack.http, site.lot_id, site.manager.headers)
        assert record["occupancy_source"] == "sensors"


def every_kind_seen(tally: Tally, _: str) -> bool:
    kinds = (tally.booked, tally.cancelled, tally.sensor_reports, tally.reads)
    passages = ("checked_in", "checked_out", "unplanned", "unmatched_exit")
    return all(kinds) and all(tally.passages[p] for p in passages)


async def test_simulation_runs_every_kind_of_action_and_a_new_run_replaces_the_devices(
    stack: Stack,
) -> None:
    public, members = await make_lots(stack)
    # Late afternoon: arrivals and departures both busy.
    watch = Watch(every_kind_seen)
    tally = await simulate(
        options(public, stack.server.base_url, seed=11, start_hour=16), watch, watch.stop
    )
    output = watch.output.getvalue()
    assert watch.stop.is_set(), output
    assert tally.errors == 0, output
    assert tally.booked > 0
    # Not a terminal: plain status lines, then the summary.
    assert re.search(r"^ +\d+\.\ds  day 1[67]:\d\d ", output, re.MULTILINE), output
    assert re.search(r"^  gates +\d+ entries \((checked_in|unplanned) \d+", output, re.MULTILINE)

    again = await simulate(
        options(public, stack.server.base_url, duration=0.5, drivers=1, lot_ids=(members.lot_id,)),
        Progress(io.StringIO()),
    )
    assert again.errors == 0
    # The second run took over the members-only lot only: new keys, the old ones revoked.
    for site, active, revoked in ((public, 2, 0), (members, 2, 2)):
        devices = (await get(stack, site, f"/api/v1/lots/{site.lot_id}/devices"))["items"]
        statuses = [d["status"] for d in devices]
        assert (statuses.count("active"), statuses.count("revoked")) == (active, revoked)


def sign_ups_refused(_: Tally, output: str) -> bool:
    return "The server refuses more sign-ups" in output


async def test_simulation_stops_signing_up_at_the_servers_limit_and_goes_on(
    template: str, tmp_path: Path
) -> None:
    # The manager's sign-up takes one of the three sign-ups allowed from this address.
    limits = {"RATE_LIMIT_REGISTER_PER_ADDRESS": "3"}
    async with single_server(template, tmp_path, limits) as stack:
        public, _ = await make_lots(stack)
        watch = Watch(sign_ups_refused)
        tally = await simulate(
            options(public, stack.server.base_url, seed=5, start_hour=9), watch, watch.stop
        )
    output = watch.output.getvalue()
    assert "The server refuses more sign-ups (rate_limited on /auth/register" in output
    assert "going on with 2 drivers" in output
    assert tally.drivers == 2, output
    assert tally.refusals["429 rate_limited"] == 1, output
    assert tally.errors == 0, output
    assert tally.actions > 0


@pytest.mark.usefixtures("cli_settings")
async def test_simulate_with_a_wrong_password_exits_1_with_one_message(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    public, _ = await make_lots(stack)
    argv = [
        "simulate",
        "--url",
        stack.server.base_url,
        "--manager-username",
        public.manager.username,
        "--manager-password",
        "not-the-password",
    ]
    assert await anyio.to_thread.run_sync(main, argv) == 1
    err = capsys.readouterr().err
    refused = f"parkspot simulate: the server refused the login of '{public.manager.username}'"
    assert err.startswith(refused)
    assert err.count("\n") == 1


@pytest.mark.usefixtures("cli_settings")
def test_simulate_against_an_unreachable_server_exits_1_with_one_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    argv = ["simulate", "--url", url, "--manager-password", "whatever1", "--duration", "1"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"parkspot simulate: cannot reach the server at {url}: ")
    assert captured.err.count("\n") == 1
    assert "Traceback" not in captured.err


@pytest.mark.usefixtures("cli_settings")
@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--rate", "0", "argument --rate: must be more than 0 and at most 1000"),
        ("--rate", "-3", "argument --rate: must be more than 0 and at most 1000"),
        ("--rate", "fast", "argument --rate: not a number: 'fast'"),
        ("--rate", "nan", "argument --rate: not a finite number: 'nan'"),
        ("--duration", "-1", "argument --duration: must be 0 (until Ctrl-C) or more"),
        ("--drivers", "0", "argument --drivers: must be at least 1"),
        ("--start-hour", "24", "argument --start-hour: must be at least 0 and less than 24"),
        ("--time-scale", "0", "argument --time-scale: must be more than 0"),
        ("--url", "ftp://example.com", "argument --url: not an http:// or https:// URL"),
    ],
)
def test_simulate_refuses_bad_options_with_exit_status_2(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--manager-password", "whatever1", option, value])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.usefixtures("cli_settings")
def test_simulate_off_a_terminal_needs_the_password_given(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["simulate", "--url", f"http://127.0.0.1:{free_port()}"]) == 2
    assert "--manager-password or --manager-password-stdin is required" in capsys.readouterr().err
