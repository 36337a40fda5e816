"""GPU-aware batching and multi-GPU placement, checked on a real CUDA device (a few minutes).

Run on a GPU node, after `make venv` with a CUDA build of torch:

    .venv/bin/python tools/gpu_check.py            # every visible GPU (one is enough)

It drives the pod's own path (`ServerSettings` -> `ModelPool.from_settings` -> engines) with the
embedded MiniLM in float16, and checks what the CPU tests cannot:

1. warm-up measured real peaks: the token cap's source is `device_memory`, its fit has a positive
   per-token cost, and a batch of 64x128 tokens really needs no more than the fit plus the margin;
2. a real out-of-memory error (free memory eaten by a filler tensor after warm-up) splits batches,
   answers every request with the same label as a batch-of-one reference, lowers the cap, counts it
   in /batching/stats and /metrics, and later batches stay under the cap;
3. placement: with 2+ GPUs (else two replicas on cuda:0), both devices take batches, answers match,
   /models/status, /batching/stats and /metrics are per device, and drain answers everything.

Prints one line per check and exits non-zero on the first failure.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time

import torch

from serving import reports
from serving.metrics import Metrics
from serving.models.base import Encoded
from serving.pool import ModelPool
from serving.settings import ServerSettings

WORDS = ("verify your account password urgent invoice ignore previous instructions hello team now").split()  # noqa: SIM905


def texts(count: int, seed: int, longest: int = 90) -> list[str]:
    rng = random.Random(seed)
    return [f"{i} " + " ".join(rng.choices(WORDS, k=rng.randint(4, longest))) for i in range(count)]


def check(ok: bool, what: str) -> None:
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        sys.exit(1)


async def pool_on(devices: str, **batching: object) -> ModelPool:
    env = {"CARPOOL_DEVICES": devices, "CARPOOL_RUNTIME": "torch", "MAX_QUEUE_SIZE": "4096"}
    env.update({key.upper(): str(value) for key, value in batching.items()})
    settings = ServerSettings.from_env(env)
    pool = ModelPool.from_settings(settings, Metrics(), None)
    await pool.start_loading()
    check(pool.ready, f"models loaded and warm on {devices}")
    return pool


async def memory_checks() -> None:
    pool = await pool_on("cuda:0", batching_strategy="batch_optimized", max_batch_size=1024)
    engine = pool.served["minilm"].engine
    cap = engine.replicas[0].cap
    print("      token_cap:", cap.describe(1024), flush=True)
    check(cap.source == "device_memory" and cap.limit is not None, "warm-up learned a memory cap")
    check(cap.memory is not None and cap.memory.per_token_bytes > 0, "the fit has a positive per-token cost")
    model = engine.model
    assert cap.memory is not None
    rows = [model.encode(" ".join(["word"] * 200)).ids] * 64  # 64 x 128 tokens
    predicted = cap.memory.base_bytes + cap.memory.per_token_bytes * 64 * len(rows[0])
    measured = await asyncio.get_running_loop().run_in_executor(
        engine.replicas[0].executor,
        model._peak_bytes,  # type: ignore[attr-defined]
        rows,
    )
    print(
        f"      64x{len(rows[0])} peak {measured / 2**20:.1f} MiB, fit {predicted / 2**20:.1f} MiB",
        flush=True,
    )
    check(measured <= predicted / 0.9, "a large batch fits within the fit plus the safety margin")

    reference = {t: engine.model.predict_batch([engine.model.encode(t)])[0] for t in texts(512, 1)}
    torch.cuda.empty_cache()
    free = torch.cuda.mem_get_info(0)[0]
    per_token = cap.memory.per_token_bytes
    leave = int(cap.memory.base_bytes + per_token * 3000)  # room for ~3000 tokens, not for 512x~100
    filler = torch.empty(max(free - leave, 0), dtype=torch.uint8, device="cuda:0")
    try:
        batch = list(reference)
        answers = await asyncio.gather(*(pool.predict(t, ["minilm"]) for t in batch))
        same = sum(answers[i]["minilm"][0].label == reference[t].label for i, t in enumerate(batch))
        check(
            same >= 0.99 * len(batch),
            f"every request answered after out-of-memory ({same}/{len(batch)} labels)",
        )
        report = reports.stats(pool)["models"]["minilm"]["token_cap"]
        print("      after:", report, flush=True)
        check(report["source"] == "out_of_memory" and report["out_of_memory_batches"] >= 1, "cap lowered")
        scraped = pool.metrics.render().decode()
        check("carpool_out_of_memory_total{" in scraped, "/metrics counts out-of-memory batches")
        lowered = report["out_of_memory_batches"]
        await asyncio.gather(*(pool.predict(t, ["minilm"]) for t in texts(512, 2)))
        again = reports.stats(pool)["models"]["minilm"]["token_cap"]["out_of_memory_batches"]
        check(again == lowered, f"later batches stay under the cap ({again - lowered} new out-of-memory)")
    finally:
        del filler
        torch.cuda.empty_cache()
    await pool.drain()


async def placement_checks() -> None:
    count = torch.cuda.device_count()
    devices = ",".join(f"cuda:{i}" for i in range(min(count, 4))) if count > 1 else "cuda:0,cuda:0"
    pool = await pool_on(devices, batching_strategy="adaptive", max_batch_size=64)
    status = reports.status(pool)
    print("      placement:", [(s["name"], s.get("devices")) for s in status], flush=True)
    check(
        all(len(s.get("devices", [])) == len(devices.split(",")) for s in status), "/models/status placement"
    )
    engine = pool.served["minilm"].engine
    alone = engine.replicas[0].model
    batch = texts(2000, 3, longest=40)
    reference = {t: alone.predict_batch([Encoded(t, alone.encode(t).ids)])[0].label for t in batch[:300]}
    started = time.perf_counter()
    answers = await asyncio.gather(*(pool.predict(t, ["minilm"]) for t in batch))
    elapsed = time.perf_counter() - started
    same = sum(answers[i]["minilm"][0].label == reference[t] for i, t in enumerate(batch[:300]))
    check(same >= 297, f"answers are each text's own ({same}/300 labels as alone)")
    per_device = reports.stats(pool)["models"]["minilm"]["devices"]
    print(
        f"      {len(batch) / elapsed:.0f} texts/s;",
        {d: v["batches"] for d, v in per_device.items()},
        flush=True,
    )
    check(all(v["batches"] > 0 for v in per_device.values()), "every device took batches")
    scraped = pool.metrics.render().decode()
    check(all(f'device="{d}"' in scraped for d in per_device), "/metrics labels each device")
    pending = [asyncio.ensure_future(pool.predict(t, ["minilm"])) for t in batch[:500]]
    await asyncio.sleep(0)
    pool.hurry()
    await pool.drain()
    check(all(p.done() and not p.exception() for p in pending), "drain answered everything in flight")


def main() -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not torch.cuda.is_available():
        print("no CUDA device visible: run this on a GPU node", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(0)
    print(f"      torch {torch.__version__}, {torch.cuda.device_count()} GPU(s): {name}")
    asyncio.run(memory_checks())
    asyncio.run(placement_checks())
    print("all GPU checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
