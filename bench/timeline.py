"""A far-API run second by second, from a request log `bench.ratelimit --log` wrote.

    python -m bench.timeline /tmp/rl.syncd.endpoint.json [--step 0.5]

Per time step and endpoint: requests sent per second and how many were refused;
then every answer that carried Retry-After and every request the simulator
counted as early (sent while an announced wait it had delivered was running).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from syncd.envelope import RATE_LIMIT_CODES


def _lane(record: dict[str, Any]) -> str:
    return "v1" if "/v1/" in record["path"] else "v2"


def _refused(record: dict[str, Any]) -> bool:
    return bool(record["status"] == 429 or record["code"] in RATE_LIMIT_CODES)


def render(log: list[dict[str, Any]], step_s: float) -> str:
    if not log:
        return "no requests"
    start = min(r["time"] for r in log)
    sent: Counter[tuple[int, str]] = Counter()
    refused: Counter[tuple[int, str]] = Counter()
    lines = []
    for r in log:
        at = r["time"] - start
        key = (int(at / step_s), _lane(r))
        sent[key] += 1
        refused[key] += _refused(r)
        if r["retry_after"] or r["early"]:
            lines.append(
                f"{at:7.3f} s {_lane(r)} HTTP {r['status']} code {r['code']}"
                f" Retry-After {r['retry_after']} answered at {at + r['latency_s']:.3f} s"
                f"{'  EARLY' if r['early'] else ''}"
            )
    last = max(step for step, _ in sent)
    for step in range(last + 1):
        cells = [
            f"{lane} {sent[step, lane] / step_s:6.1f}/s refused {refused[step, lane]:3d}"
            for lane in ("v1", "v2")
        ]
        lines.append(f"{step * step_s:6.1f} s  " + " | ".join(cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("log", type=Path)
    parser.add_argument("--step", type=float, default=0.5, help="seconds per row")
    args = parser.parse_args()
    print(render(orjson.loads(args.log.read_bytes()), args.step))


if __name__ == "__main__":
    main()
