"""Metrics benchmark (issue 6): does a Prometheus scrape loop during Allocate load cost latency?

bench/latency.py's runner with three variants: off (no metrics at all),
metrics (the endpoint up, nobody scraping), metrics_scraped (another
process scraping /metrics every --scrape-interval s: 1 s by default, fifteen
times Prometheus' usual 15 s) and metrics_otlp (no endpoint; pushed over
OTLP every second, sixty times the SDK's default). The verdict compares scraped with unscraped: a
difference of medians no larger than the round-to-round spread of either is
noise. A scrape renders in prometheus_client's own thread but holds the GIL
while it does (about a millisecond), so a far faster loop (--scrape-interval
0.05) does show at the p99 of back-to-back calls.

Usage: python -m gdp_bench.metrics [--out FILE] [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from gdp_bench.common import emit
from gdp_bench.latency import CASES, run

VARIANTS = ("off", "metrics", "metrics_scraped", "metrics_otlp")


def spread(values: list[float]) -> float:
    return max(values) - min(values)


def verdict(variants: dict[str, Any]) -> dict[str, Any]:
    """Per load shape and percentile: scraped minus unscraped, against the spread over rounds."""
    out: dict[str, Any] = {}
    for case in CASES:
        quiet, scraped = variants["metrics"][case], variants["metrics_scraped"][case]
        out[case] = {}
        for key in ("p50_ms", "p99_ms"):
            difference = round(scraped[key] - quiet[key], 4)
            noise = round(max(spread(quiet[f"{key}_per_round"]), spread(scraped[f"{key}_per_round"])), 4)
            out[case][key] = {
                "scraped_minus_unscraped_ms": difference,
                "round_spread_ms": noise,
                "within_noise": abs(difference) <= noise,
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    parser.add_argument("--rounds", type=int, help="rounds of all variants (default 5; 2 with --quick)")
    parser.add_argument("--scrape-interval", type=float, default=1.0, help="seconds between scrapes")
    parser.add_argument("--pace", type=float, default=0.01, help="seconds between paced Allocate calls")
    args = parser.parse_args()
    # A spread needs several rounds; two is the least that has one.
    rounds = args.rounds or (2 if args.quick else 5)
    result = asyncio.run(run(args.quick, rounds, args.scrape_interval, VARIANTS, args.pace))
    result["targets"] = {"scrape_effect": "within the round-to-round spread"}
    result["scrape_effect"] = verdict(result["variants"])
    emit(result, args.out)


if __name__ == "__main__":
    main()
