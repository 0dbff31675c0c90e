"""CPU per call of routing.complexity.assess over the labelled prompts.

    .venv/bin/python bench/routing/speed.py [--set tuning|heldout] [--repeat 200]

Prints the mean microseconds per call over all prompts, and separately over the
"typical" ones (bodies of 1-2 KB of JSON) and the largest, in CPU time (best of five
runs), so a busy machine does not inflate it much. One process, one core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from routing.complexity import assess  # noqa: E402


def per_call_us(rows: list[dict], repeat: int) -> float:
    calls = [(row["endpoint"], row["body"]) for row in rows]
    best = float("inf")
    for _ in range(5):          # best of five: the least disturbed by other processes
        # CPU time, not wall time: the budget is CPU, and the machine may be shared.
        start = time.process_time()
        for _ in range(repeat):
            for endpoint, body in calls:
                assess(endpoint=endpoint, body=body)
        best = min(best, time.process_time() - start)
    return best / (repeat * len(calls)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", default="tuning", choices=("tuning", "heldout"))
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    with (HERE / f"{args.set}.jsonl").open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    size = {id(r): len(json.dumps(r["body"])) for r in rows}
    typical = [r for r in rows if 1000 <= size[id(r)] <= 2000]
    large = sorted(rows, key=lambda r: size[id(r)])[-10:]
    print(f"all {len(rows)} prompts: {per_call_us(rows, args.repeat):.1f} us/call")
    print(f"{len(typical)} bodies of 1-2 KB: {per_call_us(typical, args.repeat):.1f} us/call")
    print(f"10 largest (up to {max(size.values())} B): "
          f"{per_call_us(large, args.repeat):.1f} us/call")
    # A pasted 200 KB document: the scan is windowed, only the length grows with it.
    document = {"endpoint": "chat/completions", "body": {"messages": [{"role": "user", "content":
                "Summarise this report:\n\n" + "The quarter went well, mostly. " * 6_500}]}}
    print(f"one 200 KB prompt: {per_call_us([document], args.repeat):.1f} us/call")


if __name__ == "__main__":
    main()
