"""``settle_heap``: what ``gateway serve`` does to the collector once started."""

from __future__ import annotations

import gc

from gateway.server import GC_YOUNG_THRESHOLD, settle_heap


def test_settle_heap_freezes_startup_objects_and_raises_the_young_threshold() -> None:
    """Objects alive at startup leave the collector's reach and young collections become rarer."""
    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
