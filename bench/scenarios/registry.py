"""What a scenario is: an id, a title and a coroutine producing its result."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench.harness import BenchConfig, ScenarioResult


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    run: Callable[[BenchConfig], Awaitable[ScenarioResult]]
