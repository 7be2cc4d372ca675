"""The periodic engine that keeps the metadata close behind the data.

Every ``flush_interval`` it runs the data path's ordered flush (data fsynced, then the rows
that describe it committed; not fsynced: an acknowledged sync does that) of what changed in
shape — new extents, grown or cut copies, freed ones — and every ``OVERWRITE_FLUSH_INTERVAL_S``
it also flushes extents that were only overwritten in place (their rows change nothing but
the generation; fsyncing them every few seconds cost a random-write workload a stream of
fsyncs, the kernel writes them back on its own). Every ``checkpoint_interval`` it checkpoints
the WAL from a worker thread. It runs until its nursery is cancelled; the final durable flush
belongs to ``Filesystem.close``.
"""

from __future__ import annotations

import logging
import time

import trio

from shadowfs.datapath import DataPath
from shadowfs.errors import FsError
from shadowfs.metadata import MetadataStore

log = logging.getLogger(__name__)

# As the kernel's own dirty_expire_centisecs: how long in-place overwrites may wait for the
# flush that commits their generation (an acknowledged sync never waits for it).
OVERWRITE_FLUSH_INTERVAL_S = 30.0


class Flusher:
    def __init__(
        self,
        data: DataPath,
        store: MetadataStore,
        flush_interval: float,
        checkpoint_interval: float,
    ) -> None:
        self.data = data
        self.store = store
        self.flush_interval = flush_interval
        self.checkpoint_interval = checkpoint_interval
        self.flushes = 0
        self.failures = 0

    async def run(self) -> None:
        last_checkpoint = last_full = time.monotonic()
        while True:
            await trio.sleep(self.flush_interval)
            full = time.monotonic() - last_full >= OVERWRITE_FLUSH_INTERVAL_S
            try:
                await self.data.sync(None, durable=False, overwrites=full)
                self.flushes += 1
                if full:
                    last_full = time.monotonic()
            except FsError as exc:
                # The work stays queued (DataPath.sync gives it back); the next round retries.
                self.failures += 1
                log.error("periodic flush failed: %s", exc)
            if time.monotonic() - last_checkpoint >= self.checkpoint_interval:
                last_checkpoint = time.monotonic()
                await trio.to_thread.run_sync(self.store.checkpoint_blocking)
