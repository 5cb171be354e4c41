"""The schedule arithmetic behind W4's figures (benchmarks/schedules.py)."""

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import schedules

W4 = schedules.W4_DEPS


def w4(*sections: tuple[float, float, float]) -> list[dict[str, float]]:
    return [dict(zip(("sentiment", "topics", "summary"), s, strict=True)) for s in sections]


def test_unbounded_concurrency_replays_reach_the_slowest_chain() -> None:
    lat = w4((1.0, 2.0, 3.0), (4.0, 0.5, 0.5), (0.1, 0.1, 0.1))
    assert schedules.replay(lat, W4, 6) == 5.0
    assert schedules.ideal(lat, W4, 6) == 5.0


def test_one_slot_runs_every_call_back_to_back() -> None:
    lat = w4((1.0, 2.0, 3.0), (4.0, 0.5, 0.5))
    assert schedules.replay(lat, W4, 1) == pytest.approx(11.0)
    assert schedules.ideal(lat, W4, 1) == pytest.approx(11.0)


def test_online_order_starts_a_slow_call_late_where_clairvoyance_does_not() -> None:
    # Two slots: the online order starts section 0's quick calls first, so section 2's slow
    # sentiment waits for a slot; the clairvoyant order starts it at once.
    lat = w4((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (10.0, 1.0, 1.0))
    assert schedules.replay(lat, W4, 2, "ready order") == 13.0
    assert schedules.replay(lat, W4, 2, "clairvoyant") == 11.0
    assert schedules.ideal(lat, W4, 2) == 11.0


@pytest.mark.parametrize("order", schedules.ORDERS)
def test_no_order_beats_the_lower_bound(order: str) -> None:
    for seed in range(20):
        lat, _ = schedules.draw(random.Random(seed), sections=30)
        assert schedules.replay(lat, W4, 8, order) >= schedules.ideal(lat, W4, 8) - 1e-9


def test_paced_replay_spends_the_burst_then_keeps_to_the_rate() -> None:
    # A burst of 2 at once, then one every 0.5 s: starts 0, 0, 0.5, 1.0; each takes 1 s.
    assert schedules.paced([1.0] * 4, 10, 2.0, 2.0) == pytest.approx(2.0)
    # One slot: each call waits for the last to end, and the bucket has refilled by then.
    assert schedules.paced([1.0] * 3, 1, 2.0, 2.0) == pytest.approx(3.0)
