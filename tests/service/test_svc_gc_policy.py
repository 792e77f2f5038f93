"""The server's garbage-collection policy: freezes hold long-lived objects out of full
collections, and the periodic full collection frees the garbage cycles a freeze held back."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from service.gc_policy import GcPolicy
from service.settings import Settings


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def restored_gc() -> Iterator[None]:
    try:
        yield
    finally:
        gc.unfreeze()
        gc.enable()


def test_a_freeze_holds_a_cycle_back_until_the_full_collection(restored_gc: None) -> None:
    now = [0.0]
    policy = GcPolicy(5.0, 60.0, clock=lambda: now[0])
    gc.disable()  # the cycle must still exist (unreachable, uncollected) when frozen
    garbage = _Cycle()
    alive = weakref.ref(garbage)
    del garbage
    now[0] = 5.0
    assert policy.tick() == "freeze" and gc.get_freeze_count() > 0
    gc.enable()
    gc.collect()
    assert alive() is not None  # frozen: no collection walks it
    now[0] = 30.0
    assert policy.tick() == "freeze" and alive() is not None
    now[0] = 60.0
    assert policy.tick() == "full"
    assert alive() is None  # unfrozen and collected
    assert gc.get_freeze_count() > 0  # what survived is frozen again
    # new garbage made after a freeze is collected as usual
    later = weakref.ref(_Cycle())
    gc.collect()
    assert later() is None


def test_intervals_are_checked() -> None:
    with pytest.raises(ValueError, match="at most"):
        GcPolicy(10.0, 5.0)
    with pytest.raises(ValidationError, match="gc_freeze_interval_s must be at most"):
        Settings(gc_freeze_interval_s=700.0, gc_full_interval_s=600.0)
    assert Settings(gc_freeze_interval_s=0).gc_freeze_interval_s == 0  # off
