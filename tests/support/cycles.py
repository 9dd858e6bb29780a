"""One cycle of several streams, concurrently, as the daemon runs them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from syncd.client import CoreClawClient
from syncd.config import Settings
from syncd.models import Source
from syncd.storage import Store
from syncd.sync import CycleReport, StreamSync

BOTH = (Source.V1, Source.V2)


async def sync_streams(
    settings: Settings, store: Store, streams: Iterable[Source] = BOTH, **kw: Any
) -> list[CycleReport]:
    """One cycle of each stream (`kw`: run_cycle's options), sharing one client."""
    async with CoreClawClient(settings) as client:
        syncers = [StreamSync(s, client, store, settings) for s in streams]
        return list(await asyncio.gather(*(s.run_cycle(**kw) for s in syncers)))


async def sync_streams_errors(
    settings: Settings, store: Store, streams: Iterable[Source] = BOTH
) -> list[BaseException]:
    """Like `sync_streams`, but the exceptions the cycles ended with instead of raising."""
    async with CoreClawClient(settings) as client:
        syncers = [StreamSync(s, client, store, settings) for s in streams]
        outcomes = await asyncio.gather(*(s.run_cycle() for s in syncers), return_exceptions=True)
    return [o for o in outcomes if isinstance(o, BaseException)]
