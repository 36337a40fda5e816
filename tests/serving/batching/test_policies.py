"""The batch policies, table-tested: when a batch leaves and who rides in it."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import pytest

from serving.batching import policies
from serving.batching.cost import CPU_SEED, CostModel
from serving.settings import BatchingConfig

pytestmark = pytest.mark.unit

GPU_LIKE = CostModel(fixed_s=0.005, per_token_s=1e-6)
OLD_TWO = (0.05, 0.04, 0.0, 0.0)
OLD_ENDS = (0.05, 0.0, 0.0, 0.04, 0.04)


@dataclass(frozen=True)
class W:
    tokens: int
    enqueued_at: float = 0.0


def queue(*tokens: int, ages: tuple[float, ...] = (), now: float = 1.0) -> list[W]:
    ages = ages or (0.0,) * len(tokens)
    return [W(t, now - age) for t, age in zip(tokens, ages, strict=True)]


@pytest.mark.parametrize(
    ("waiting", "cap", "cost", "typical_wait_s", "expected"),
    [
        pytest.param([], 8, CPU_SEED, 0.0, (), id="empty"),
        pytest.param(queue(30), 8, CPU_SEED, 0.0, (0,), id="alone"),
        pytest.param(
            queue(10, 50, 10, 50, 10), 8, CPU_SEED, 0.0, (0, 2, 4), id="short-oldest-rides-with-short"
        ),
        pytest.param(queue(50, 10, 10, 50), 8, CPU_SEED, 0.0, (0, 3), id="long-oldest-rides-with-long"),
        pytest.param(queue(*[10] * 10), 4, CPU_SEED, 0.0, (0, 1, 2, 3), id="cap-takes-the-oldest-equals"),
        pytest.param(queue(10, 50, 10, 50, 10), 8, GPU_LIKE, 0.0, (0, 1, 2, 3, 4), id="fixed-cost-dominates"),
        pytest.param(queue(10, 11, 1, 11, 1), 3, CPU_SEED, 0.0, (0, 1, 3), id="pads-up-to-a-close-length"),
        pytest.param(queue(10, 50, 10, 10, ages=OLD_TWO), 8, CPU_SEED, 0.0, (0, 2, 3), id="no-age-credit"),
        pytest.param(
            queue(10, 50, 10, 10, ages=OLD_TWO), 8, CPU_SEED, 0.01, (0, 1), id="old-rider-pulled-forward"
        ),
        pytest.param(queue(*[30] * 5, ages=OLD_ENDS), 3, CPU_SEED, 0.0, (0, 1, 2), id="equals-in-order"),
        pytest.param(queue(*[30] * 5, ages=OLD_ENDS), 3, CPU_SEED, 0.01, (0, 3, 4), id="older-equals-first"),
        pytest.param(
            queue(20, 58, 12, 58, 12, ages=OLD_ENDS), 3, GPU_LIKE, 0.0, (0, 2, 4), id="gpu-least-padding"
        ),
        pytest.param(
            queue(20, 58, 12, 58, 12, ages=OLD_ENDS), 3, GPU_LIKE, 0.01, (0, 3, 4), id="gpu-age-first"
        ),
        pytest.param(
            queue(*[30] * 6, ages=(1.0,) * 6), 4, CPU_SEED, 0.01, (0, 1, 2, 3), id="backlog-fills-batches"
        ),
        pytest.param(queue(10, 20, 30), 1, GPU_LIKE, 0.0, (0,), id="cap-one"),
    ],
)
def test_select(
    waiting: list[W], cap: int, cost: CostModel, typical_wait_s: float, expected: tuple[int, ...]
) -> None:
    assert policies.select(waiting, cap=cap, cost=cost, now=1.0, typical_wait_s=typical_wait_s) == expected


def test_select_always_takes_the_oldest_and_respects_the_cap() -> None:
    rng = random.Random(7)
    for _ in range(500):
        n = rng.randint(1, 80)
        waiting = queue(
            *(rng.randint(3, 128) for _ in range(n)), ages=tuple(sorted(rng.random() for _ in range(n))[::-1])
        )
        cap = rng.randint(1, 40)
        cost = rng.choice([CPU_SEED, GPU_LIKE])
        taken = policies.select(
            waiting, cap=cap, cost=cost, now=1.0, typical_wait_s=rng.choice([0.0, 0.05, 0.5])
        )
        assert taken[0] == 0
        assert 1 <= len(taken) <= cap
        assert list(taken) == sorted(set(taken))
        assert all(0 <= i < n for i in taken)


SIGNALS = policies.Signals(now=1.0)


@pytest.mark.parametrize(
    ("waiting", "min_batch", "expected"),
    [
        pytest.param([], 1, policies.Pick(), id="empty"),
        pytest.param(queue(10, 10, 10, 10), 1, policies.Pick((0, 1, 2, 3)), id="full-leaves-at-once"),
        pytest.param(
            queue(10, 10, ages=(0.005, 0.0)), 1, policies.Pick(wait_until=1.005), id="young-partial-waits"
        ),
        pytest.param(queue(10, 10, ages=(0.010, 0.0)), 1, policies.Pick((0, 1)), id="max-wait-reached"),
        pytest.param(queue(10, ages=(0.012,)), 2, policies.Pick(wait_until=1.008), id="min-not-met-held"),
        pytest.param(queue(10, ages=(0.020,)), 2, policies.Pick((0,)), id="min-not-met-bound-reached"),
        pytest.param(queue(10, 10, ages=(0.011, 0.0)), 2, policies.Pick((0, 1)), id="min-met-after-max-wait"),
    ],
)
def test_batch_optimized(waiting: list[W], min_batch: int, expected: policies.Pick) -> None:
    policy = policies.BatchOptimized(max_batch_size=4, max_wait_s=0.010, min_batch_size=min_batch)
    pick = policy.pick(waiting, SIGNALS)
    assert pick.take == expected.take
    assert pick.wait_until == pytest.approx(expected.wait_until)


def test_single_request_takes_the_oldest_alone() -> None:
    assert policies.SingleRequest().pick(queue(10, 10, 10), SIGNALS) == policies.Pick((0,))
    assert policies.SingleRequest().pick([], SIGNALS) == policies.Pick()


CONTROLLER = policies.AdaptiveController(load_threshold=0.7, latency_threshold_s=0.2, max_wait_s=0.010)


@pytest.mark.parametrize(
    ("signals", "mode", "reason"),
    [
        pytest.param(
            policies.Signals(now=1, busy=0.9, arrival_rate=2000, latency_p95_s=0.3),
            policies.Mode.AT_ONCE,
            "p95 latency 300.0 ms above latency_threshold_ms 200",
            id="latency-above-threshold",
        ),
        pytest.param(
            policies.Signals(now=1, busy=0.3, arrival_rate=2000, latency_p95_s=0.01),
            policies.Mode.AT_ONCE,
            "device load 0.30 below load_threshold 0.7",
            id="low-load",
        ),
        pytest.param(
            policies.Signals(now=1, busy=0.9, arrival_rate=50, latency_p95_s=0.01),
            policies.Mode.AT_ONCE,
            "only 50 arrivals/s",
            id="sparse-arrivals",
        ),
        pytest.param(
            policies.Signals(now=1, busy=0.9, arrival_rate=2000, latency_p95_s=0.01),
            policies.Mode.HOLD,
            "device load 0.90 >= load_threshold 0.7",
            id="loaded-and-fast",
        ),
        pytest.param(
            policies.Signals(now=1, busy=0.9, arrival_rate=2000, latency_p95_s=None),
            policies.Mode.HOLD,
            "holding partial batches",
            id="no-latency-yet",
        ),
    ],
)
def test_adaptive_controller(signals: policies.Signals, mode: policies.Mode, reason: str) -> None:
    chosen, why = CONTROLLER.decide(signals)
    assert chosen is mode
    assert reason in why


LOADED = policies.Signals(now=1.0, busy=0.95, arrival_rate=1000.0, last_arrival=1.0)


@pytest.mark.parametrize(
    ("waiting", "signals", "expected"),
    [
        pytest.param(queue(10), LOADED, policies.Pick((0,)), id="lone-request-goes-at-once-even-loaded"),
        pytest.param(
            queue(10, 10, 10), LOADED, policies.Pick(wait_until=1.002), id="loaded-holds-while-arriving"
        ),
        pytest.param(
            queue(10, 10, 10, ages=(0.010, 0.0, 0.0)),
            LOADED,
            policies.Pick((0, 1, 2)),
            id="hold-ends-at-max-wait",
        ),
        pytest.param(
            queue(10, 10, 10),
            policies.Signals(now=1.0, busy=0.95, arrival_rate=1000.0, last_arrival=0.997),
            policies.Pick((0, 1, 2)),
            id="hold-ends-when-arrivals-stop",
        ),
        pytest.param(queue(10, 10, 10, 10), LOADED, policies.Pick((0, 1, 2, 3)), id="full-goes-at-once"),
        pytest.param(
            queue(10, 10, 10),
            policies.Signals(now=1.0, busy=0.1),
            policies.Pick((0, 1, 2)),
            id="idle-at-once",
        ),
    ],
)
def test_adaptive_pick(waiting: list[W], signals: policies.Signals, expected: policies.Pick) -> None:
    policy = policies.Adaptive(CONTROLLER, max_batch_size=4)
    pick = policy.pick(waiting, signals)
    assert pick.take == expected.take
    assert pick.wait_until == pytest.approx(expected.wait_until)


@pytest.mark.parametrize(
    ("signals", "mode", "reason"),
    [
        pytest.param(LOADED, policies.Mode.HOLD, "holding partial batches", id="loaded-holds"),
        pytest.param(
            policies.Signals(now=1.0, busy=0.1), policies.Mode.AT_ONCE, "below load_threshold", id="idle"
        ),
    ],
)
def test_an_adaptive_pick_carries_the_mode_and_the_reason(
    signals: policies.Signals, mode: policies.Mode, reason: str
) -> None:
    policy = policies.Adaptive(CONTROLLER, max_batch_size=4)
    before = dataclasses.replace(policy)
    pick = policy.pick(queue(10, 10, 10), signals)
    assert pick.mode is mode and reason in pick.reason
    assert policy == before  # nothing of the choice stays in the policy


def test_the_fixed_strategies_pick_without_a_mode() -> None:
    single = policies.SingleRequest().pick(queue(10, 10), SIGNALS)
    batched = policies.BatchOptimized(max_batch_size=2, max_wait_s=0.010).pick(queue(10, 10), SIGNALS)
    assert (single.mode, batched.mode) == (None, None)


@pytest.mark.parametrize(
    ("cost", "expected"),
    [
        pytest.param(CPU_SEED, (0, 2, 4), id="cpu-padding-costs"),
        pytest.param(GPU_LIKE, (0, 1, 2, 3, 4), id="gpu-fixed-cost-dominates"),
    ],
)
@pytest.mark.parametrize("strategy", ["batch_optimized", "adaptive"])
def test_riders_are_chosen_by_the_cost_model_the_signals_carry(
    strategy: str, cost: CostModel, expected: tuple[int, ...]
) -> None:
    config = BatchingConfig.model_validate(
        {"strategy": strategy, "max_batch_size": 8, "max_wait_time_ms": 10}
    )
    waiting = queue(10, 50, 10, 50, 10, ages=(0.011, 0.0, 0.0, 0.0, 0.0))
    assert policies.for_config(config).pick(waiting, policies.Signals(now=1.0, cost=cost)).take == expected


@pytest.mark.parametrize("strategy", ["batch_optimized", "adaptive"])  # single_request holds nothing
def test_policies_are_frozen(strategy: str) -> None:
    policy = policies.for_config(BatchingConfig.model_validate({"strategy": strategy}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_batch_size = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        pytest.param({"strategy": "single_request"}, policies.SingleRequest, id="single"),
        pytest.param({"strategy": "batch_optimized"}, policies.BatchOptimized, id="batch-optimized"),
        pytest.param({"strategy": "adaptive"}, policies.Adaptive, id="adaptive"),
        pytest.param({"strategy": "batch_optimized", "enable": False}, policies.SingleRequest, id="disabled"),
    ],
)
def test_for_config(changes: dict[str, object], kind: type) -> None:
    config = BatchingConfig.model_validate(changes)
    assert isinstance(policies.for_config(config), kind)


def test_for_config_carries_the_knobs() -> None:
    config = BatchingConfig.model_validate(
        {"strategy": "batch_optimized", "max_batch_size": 16, "max_wait_time_ms": 25, "min_batch_size": 3}
    )
    policy = policies.for_config(config)
    assert isinstance(policy, policies.BatchOptimized)
    assert (policy.max_batch_size, policy.max_wait_s, policy.min_batch_size) == (16, 0.025, 3)


@dataclass(frozen=True)
class L:
    tokens: int
    enqueued_at: float
    lane: int


def lanes_of(spec: str) -> list[L]:
    """'ibbi': interactive, bulk, bulk, interactive, in arrival order, all 10 tokens."""
    return [L(10, i * 0.001, 1 if kind == "b" else 0) for i, kind in enumerate(spec)]


@pytest.mark.parametrize(
    ("spec", "cap", "passed", "expected"),
    [
        pytest.param("iiii", 2, 0, None, id="one-lane-interactive"),
        pytest.param("bbbb", 2, 0, None, id="one-lane-bulk"),
        pytest.param("bbii", 2, 0, [2, 3], id="interactive-fill-the-seats"),
        pytest.param("bbii", 4, 0, [2, 0, 1, 3], id="bulk-take-what-is-left"),
        pytest.param("biib", 1, 2, [1, 2], id="passed-below-the-bound"),
        pytest.param("biib", 1, 3, [0, 1, 2, 3], id="bound-reached-oldest-bulk-anchors"),
        pytest.param("iibb", 8, 3, [2, 0, 1, 3], id="bound-reached-bulk-younger"),
    ],
)
def test_lanes(spec: str, cap: int, passed: int, expected: list[int] | None) -> None:
    assert policies.lanes(lanes_of(spec), cap, passed) == expected


@pytest.mark.parametrize(
    ("spec", "passed", "expected"),
    [
        pytest.param("bbii", 0, (2,), id="interactive-first"),
        pytest.param("bbii", 3, (0,), id="bulk-after-the-bound"),
        pytest.param("bb", 0, (0,), id="bulk-alone"),
    ],
)
def test_single_request_serves_interactive_first_within_the_bound(
    spec: str, passed: int, expected: tuple[int, ...]
) -> None:
    signals = policies.Signals(now=1.0, bulk_passed=passed)
    assert policies.SingleRequest().pick(lanes_of(spec), signals).take == expected


def test_select_with_both_lanes_fills_interactive_first_and_keeps_its_invariants() -> None:
    rng = random.Random(11)
    for _ in range(300):
        n = rng.randint(2, 40)
        waiting = [L(rng.randint(3, 64), i * 0.001, rng.randint(0, 1)) for i in range(n)]
        cap = rng.randint(1, 16)
        passed = rng.randint(0, 4)
        taken = policies.select(waiting, cap=cap, cost=CPU_SEED, now=1.0, bulk_passed=passed)
        assert 1 <= len(taken) <= cap and list(taken) == sorted(set(taken))
        interactive = [i for i, w in enumerate(waiting) if w.lane == 0]
        bulk = [i for i, w in enumerate(waiting) if w.lane == 1]
        if interactive and bulk and passed >= policies.BULK_MAX_PASSED:
            assert bulk[0] in taken  # the bound: the oldest bulk request rides
        elif interactive:
            assert interactive[0] in taken  # otherwise the oldest interactive one always does
            if len(interactive) >= cap:
                assert not set(taken) & set(bulk)


@pytest.mark.parametrize(
    ("spec", "cap", "passed", "expected"),
    [
        pytest.param("bbbb", 8, 0, (0, 1, 2, 3), id="a-list-rides-together"),
        pytest.param("bbbbb", 3, 0, (0, 1, 2), id="up-to-max-batch-size"),
        pytest.param("bbbb", 1, 0, (0,), id="cap-one-alone"),
        pytest.param("ibbi", 8, 0, (0,), id="interactive-alone"),
        pytest.param("bbib", 8, 0, (2,), id="interactive-first-and-alone"),
        pytest.param("bibb", 8, 3, (0, 2, 3), id="bulk-after-the-bound-without-interactive"),
    ],
)
def test_single_request_runs_a_batch_lists_items_together(
    spec: str, cap: int, passed: int, expected: tuple[int, ...]
) -> None:
    signals = policies.Signals(now=1.0, bulk_passed=passed)
    assert policies.SingleRequest(max_batch_size=cap).pick(lanes_of(spec), signals).take == expected


def test_for_config_gives_single_request_the_cap_also_when_batching_is_off() -> None:
    for changes in ({"strategy": "single_request"}, {"strategy": "adaptive", "enable": False}):
        config = BatchingConfig.model_validate({**changes, "max_batch_size": 12})
        assert policies.for_config(config) == policies.SingleRequest(max_batch_size=12)


@pytest.mark.parametrize(
    ("waiting", "signals", "expected"),
    [
        pytest.param(queue(10), LOADED, policies.Pick(wait_until=1.020), id="lone-held-for-company"),
        pytest.param(queue(10, 10), LOADED, policies.Pick(wait_until=1.020), id="below-min-held"),
        pytest.param(
            queue(10, 10, ages=(0.020, 0.0)), LOADED, policies.Pick((0, 1)), id="below-min-bound-reached"
        ),
        pytest.param(
            queue(10, 10, 10, ages=(0.011, 0.0, 0.0)), LOADED, policies.Pick((0, 1, 2)), id="min-met-max-wait"
        ),
        pytest.param(
            queue(10, 10),
            policies.Signals(now=1.0, busy=0.1),
            policies.Pick((0, 1)),
            id="at-once-ignores-min",
        ),
    ],
)
def test_adaptive_holds_below_min_batch_size_like_batch_optimized(
    waiting: list[W], signals: policies.Signals, expected: policies.Pick
) -> None:
    policy = policies.Adaptive(CONTROLLER, max_batch_size=8, min_batch_size=3)
    pick = policy.pick(waiting, signals)
    assert pick.take == expected.take
    assert pick.wait_until == pytest.approx(expected.wait_until)


# -- the token cap (device memory) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("waiting", "cap", "max_tokens", "expected"),
    [
        pytest.param(queue(*[10] * 8), 8, None, tuple(range(8)), id="no-cap-fills"),
        pytest.param(queue(*[10] * 8), 8, 40, (0, 1, 2, 3), id="four-of-ten-tokens"),
        pytest.param(queue(*[10] * 8), 8, 39, (0, 1, 2), id="rounded-down"),
        pytest.param(queue(50, 10, 10), 8, 20, (0,), id="longer-oldest-rides-alone"),
        pytest.param(queue(10, 50, 10, 50), 8, 60, (0, 2), id="long-riders-do-not-fit"),
        pytest.param(queue(*[10] * 8), 2, 1000, (0, 1), id="max-batch-size-still-caps"),
    ],
)
def test_choose_keeps_batches_within_the_token_cap(
    waiting: list[W], cap: int, max_tokens: int | None, expected: tuple[int, ...]
) -> None:
    taken = policies.choose(waiting, cap=cap, cost=GPU_LIKE, now=1.0, max_tokens=max_tokens)
    assert taken == expected


def test_every_batch_chosen_under_a_token_cap_fits_it() -> None:
    rng = random.Random(7)
    for _ in range(300):
        waiting = queue(*[rng.randint(4, 64) for _ in range(rng.randint(1, 40))])
        max_tokens = rng.randint(16, 600)
        for cost in (CPU_SEED, GPU_LIKE):
            taken = policies.select(waiting, cap=16, cost=cost, now=1.0, max_tokens=max_tokens)
            assert taken[0] == 0 and len(taken) <= 16
            if len(taken) > 1:
                assert len(taken) * max(waiting[i].tokens for i in taken) <= max_tokens


def test_a_cap_larger_than_any_batch_changes_nothing() -> None:
    rng = random.Random(3)
    for _ in range(100):
        waiting = queue(*[rng.randint(4, 64) for _ in range(rng.randint(1, 40))])
        free = policies.select(waiting, cap=16, cost=CPU_SEED, now=1.0)
        capped = policies.select(waiting, cap=16, cost=CPU_SEED, now=1.0, max_tokens=16 * 64)
        assert free == capped


@pytest.mark.parametrize(
    ("tokens", "take", "max_tokens", "expected"),
    [
        pytest.param((10, 10, 10), (0, 1, 2), None, (0, 1, 2), id="no-cap"),
        pytest.param((10, 10, 30), (0, 1, 2), 60, (0, 1), id="a-long-one-stops-the-prefix"),
        pytest.param((90, 10), (0, 1), 60, (0,), id="first-always-rides"),
        pytest.param((10, 10), (), 60, (), id="nothing"),
    ],
)
def test_fit_tokens(
    tokens: tuple[int, ...], take: tuple[int, ...], max_tokens: int | None, expected: tuple[int, ...]
) -> None:
    assert policies.fit_tokens(queue(*tokens), take, max_tokens) == expected


@pytest.mark.parametrize("strategy", ["batch_optimized", "adaptive"])
def test_a_batch_full_by_tokens_leaves_without_waiting(strategy: str) -> None:
    policy = policies.for_config(
        BatchingConfig.model_validate(
            {"strategy": strategy, "max_batch_size": 32, "max_wait_time_ms": 50, "load_threshold": 0.1}
        )
    )
    waiting = queue(20, 20, 20, 20)  # 80 tokens: a full batch under a cap of 80, not under none
    busy = {"busy": 0.9, "arrival_rate": 1000.0, "last_arrival": 1.0}
    held = policy.pick(waiting, policies.Signals(now=1.0, **busy))  # type: ignore[arg-type]
    assert not held.take and held.wait_until is not None
    full = policy.pick(waiting, policies.Signals(now=1.0, max_tokens=80, **busy))  # type: ignore[arg-type]
    assert full.take == (0, 1, 2, 3)
    over = policy.pick(queue(20, 20, 20, 20, 20), policies.Signals(now=1.0, max_tokens=80, **busy))  # type: ignore[arg-type]
    assert over.take == (0, 1, 2, 3)
