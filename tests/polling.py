"""Waiting for a condition in async tests: one helper instead of a copy per test module.

``tests/`` is on ``sys.path`` (pytest ``pythonpath``), so any test module can
``from polling import until``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def until(
    check: Callable[[], Awaitable[bool] | bool], within: float = 20.0, interval: float = 0.01
) -> None:
    """Poll ``check`` (sync or async) until it is true; ``TimeoutError`` after ``within`` s."""
    async with asyncio.timeout(within):
        while True:
            result = check()
            if await result if asyncio.iscoroutine(result) else result:  # type: ignore[misc]
                return
            await asyncio.sleep(interval)
