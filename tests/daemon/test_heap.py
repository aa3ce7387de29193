"""settle_heap: what lives at start is set aside from the collector's passes, and the cycles
of what was set aside are collected at the next settle (a reload)."""

from __future__ import annotations

import gc
import weakref

from automationd.daemon import settle_heap


class Node:
    me: Node


def test_live_objects_are_set_aside_and_their_cycles_collected_at_the_next_settle() -> None:
    node = Node()
    node.me = node  # a cycle: only the collector can free it
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        gone = weakref.ref(node)
        del node
        gc.collect()
        assert gone() is not None  # set aside: a collection does not look at it
        settle_heap()
        assert gone() is None
    finally:
        gc.unfreeze()
