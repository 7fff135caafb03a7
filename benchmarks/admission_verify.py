"""What checking a vote's admission signature costs, and whether it can use a second core.

The archiver's recount and `tally audit verify` check every signed vote with
`tally.ledger.admission.check_admission` (issue 11). This script times, on N signed version 0x02
vote records made with a real `AdmissionSigner`:

  verify     the bare Ed25519 verification (pyca/cryptography, the key object parsed once);
  check      `check_admission` per record (the message rebuilt, the key looked up, the verify);
  batch      `check_admissions` on a pool of 1, then 2 threads (chunks of 256 records);
  threads    N bare verifications split over 1, then 2 threads: wall time, and process CPU
             time / wall time (the cores the threads kept busy). If verification holds the
             interpreter lock, 2 threads keep at most ~1 core busy and take as long as 1; if it
             releases it, they keep up to 2 busy. The CPU/wall figure reads right also on a
             loaded machine, where the wall-time speed-up may not show.

  GIL        whether a verification releases the interpreter lock, shown directly: with the
             switch interval at 5 s, a thread that sleeps 0.1 ms in a loop wakes thousands of
             times a second while another verifies if the verify releases the lock, and next to
             never during a pure-Python loop as long (which holds it).

Each figure is the best of --repeat passes (default 3), in µs per record.

Run:  .venv/bin/python benchmarks/admission_verify.py [--records 20000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from tally.ledger.admission import (
    AdmissionKey,
    AdmissionSigner,
    admission_message,
    check_admission,
    check_admissions,
)
from tally.ledger.leaf import VoteRecord, VoteStatus

NAME = "tally.bench/admission/bench"
POLL = "p-admission-verify"


def records(signer: AdmissionSigner, count: int) -> list[VoteRecord]:
    now = time.time_ns() // 1_000_000
    made = []
    for i in range(count):
        pseudonym = i.to_bytes(16, "big")
        option = ("red", "green", "blue")[i % 3]
        admission = signer.sign(POLL, pseudonym, option, VoteStatus.ACCEPTED, now + i)
        made.append(VoteRecord(POLL, i % 16, i // 16 + 1, pseudonym, option, now + i + 2,
                               VoteStatus.ACCEPTED, admission))  # fmt: skip
    return made


def best_us(run: Callable[[], object], count: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


def threaded(
    jobs: list[tuple[bytes, bytes]], verify: Callable[[bytes, bytes], None], threads: int
) -> tuple[float, float]:
    """(wall s, process CPU s) to verify `jobs` split evenly over `threads` threads."""
    parts = [jobs[n::threads] for n in range(threads)]

    def work(part: list[tuple[bytes, bytes]]) -> None:
        for signature, message in part:
            verify(signature, message)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, [parts[0][:10]] * threads))  # threads started before the clock
        cpu, wall = time.process_time(), time.perf_counter()
        list(pool.map(work, parts))
        return time.perf_counter() - wall, time.process_time() - cpu


def wakeups_during(work: Callable[[], object]) -> tuple[int, float]:
    """(times a sleeping thread woke and ran Python, seconds) while this thread runs `work`,
    with the switch interval at 5 s: the sleeper needs the interpreter lock to run, and gets it
    only when `work` releases it (a C call that drops it) or, held, after the 5 s interval."""
    stop = threading.Event()
    woke = [0]

    def sleeper() -> None:
        while not stop.is_set():
            woke[0] += 1
            time.sleep(0.0001)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    thread = threading.Thread(target=sleeper)
    try:
        thread.start()
        time.sleep(0.05)
        before, started = woke[0], time.perf_counter()
        work()
        elapsed, during = time.perf_counter() - started, woke[0] - before
    finally:
        stop.set()
        sys.setswitchinterval(interval)
        thread.join()
    return during, elapsed


def spin(seconds: float) -> None:
    """Pure Python for about `seconds`: holds the interpreter lock throughout."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


def measure(count: int, repeat: int) -> dict[str, Any]:
    signer = AdmissionSigner(NAME, Ed25519PrivateKey.generate())
    key = AdmissionKey(NAME, signer.key.public_key)
    keys = {key.key_id: key}
    made = records(signer, count)
    if any(check_admission(r, keys) is not None for r in made):
        raise SystemExit("a record made here does not check")
    public = Ed25519PublicKey.from_public_bytes(key.public_key)  # parsed once
    jobs = []
    for r in made:
        assert r.admission is not None
        a = r.admission
        message = admission_message(
            r.poll_id, r.pseudonym, r.option_id, r.status, a.admitted_ms, a.key_id
        )
        jobs.append((a.signature, message))
    n = len(jobs)
    verify_us = best_us(lambda: [public.verify(s, m) for s, m in jobs], n, repeat)
    check_us = best_us(lambda: [check_admission(r, keys) for r in made], n, repeat)
    verify_woke, verify_s = wakeups_during(lambda: [public.verify(s, m) for s, m in jobs])
    spin_woke, spin_s = wakeups_during(lambda: spin(verify_s))
    runs: dict[int, tuple[float, float]] = {}
    for threads in (1, 2, 1, 2):
        wall, cpu = threaded(jobs, public.verify, threads)
        best = runs.get(threads)
        if best is None or wall < best[0]:
            runs[threads] = (wall, cpu)
    batch: dict[int, tuple[float, float]] = {}
    for threads in (1, 2, 1, 2):  # check_admissions, as the archiver or auditor would call it
        with ThreadPoolExecutor(threads) as pool:
            check_admissions(made[:1024], keys, pool, chunk=256)  # threads started
            cpu, wall = time.process_time(), time.perf_counter()
            reasons = check_admissions(made, keys, pool, chunk=256)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if any(reason is not None for reason in reasons):
            raise SystemExit("check_admissions refused a record made here")
        if threads not in batch or wall < batch[threads][0]:
            batch[threads] = (wall, cpu)
    threads_doc = {
        str(t): {
            "wall_s": round(w, 3),
            "cpu_s": round(c, 3),
            "cores_busy": round(c / w, 2),
            "verifies_per_s": round(n / w),
        }
        for t, (w, c) in sorted(runs.items())
    }
    return {
        "records": n,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "ed25519_verify_us": round(verify_us, 1),
        "check_admission_us": round(check_us, 1),
        "check_overhead_us": round(check_us - verify_us, 1),
        "threads": threads_doc,
        "speedup_2_threads": round(runs[1][0] / runs[2][0], 2),
        "check_admissions_pool": {
            str(t): {"wall_us": round(1e6 * w / n, 1), "cpu_us": round(1e6 * c / n, 1)}
            for t, (w, c) in sorted(batch.items())
        },
        "check_admissions_speedup_2_threads": round(batch[1][0] / batch[2][0], 2),
        # A sleeping thread's wake-ups per second while verifying, against a pure-Python loop
        # as long (which holds the lock: next to none) and the ~10,000/s it makes when free.
        "sleeper_wakeups_per_s": {
            "during_verifies": round(verify_woke / verify_s),
            "during_pure_python": round(spin_woke / spin_s),
        },
        "releases_gil": verify_woke / verify_s > 100 * max(1.0, spin_woke / spin_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = measure(args.records, args.repeat)
    if args.json:
        print(json.dumps(r))
        return
    print(f"{r['records']:,} signed records; {r['cpus']} CPUs, load average {r['load_average_1m']}")
    print(f"Ed25519 verify alone   {r['ed25519_verify_us']:>7} us per record")
    print(
        f"check_admission        {r['check_admission_us']:>7} us per record "
        f"({r['check_overhead_us']:+} us: message, key lookup, checks)"
    )
    for t, row in r["threads"].items():
        print(
            f"{t} thread(s)            {row['wall_s']:>7} s wall, {row['cpu_s']} s CPU: "
            f"{row['cores_busy']} cores busy, {row['verifies_per_s']:,} verifies/s"
        )
    wakeups = r["sleeper_wakeups_per_s"]
    print(f"2 threads / 1 thread: {r['speedup_2_threads']}x wall")
    print(
        f"a sleeping thread woke {wakeups['during_verifies']:,}/s during verifies, "
        f"{wakeups['during_pure_python']:,}/s during pure Python (switch interval 5 s)"
    )
    print(f"Ed25519 verify releases the GIL: {r['releases_gil']}")
    for t, row in r["check_admissions_pool"].items():
        print(
            f"check_admissions on {t} thread(s): {row['wall_us']} us wall, {row['cpu_us']} us CPU "
            "per record"
        )
    print(f"check_admissions 2 threads / 1: {r['check_admissions_speedup_2_threads']}x wall")


if __name__ == "__main__":
    main()
