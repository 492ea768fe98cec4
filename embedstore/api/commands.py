"""Which API function each CLI command calls: the one home of that mapping.

A function of the API says which command it is (`@command("store verify")`); the CLI command of that name calls
it and prints what it returns. `tests/test_api.py` walks the CLI's commands and checks each one is here and calls
its function, so a command cannot grow a second way of doing its job beside the API's.
"""
from __future__ import annotations

from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

#: command ("encode", "store verify", "analyze cosine") → the API function it calls.
COMMANDS: dict[str, Callable] = {}


def command(name: str) -> Callable[[F], F]:
    def register(fn: F) -> F:
        COMMANDS[name] = fn
        return fn

    return register
