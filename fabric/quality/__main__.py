"""python -m fabric.quality [--seeds 64] [--users 16] [--rounds 3]: the effect tables, a JSON last line."""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from ..bench.text_table import text_table
from ..miniature.model import WEIGHTS, load
from . import rounds, single_shot


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fabric.quality", description=__doc__.split(":")[1].strip())
    parser.add_argument("--seeds", type=int, default=64, help="seeds per single-shot row (default 64)")
    parser.add_argument("--users", type=int, default=16, help="simulated users in the rounds (default 16)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["single-shot", "rounds"], help="run one part")
    parser.add_argument("--weights", default=str(WEIGHTS), help=f"the miniature's weights (default {WEIGHTS})")
    args = parser.parse_args(argv)
    begin = time.perf_counter()
    result = {"machine": machine()}
    print(f"FABRIC on the miniature ({result['machine']})", flush=True)
    miniature = load(args.weights)
    if args.only != "rounds":
        print(f"\nsingle shot: prompt \"a circle\", {args.seeds} seeds, liked red circles on white, "
              "disliked blue shapes on black", flush=True)
        rows = single_shot.run(miniature, list(range(args.seeds)), log=lambda m: print(m, flush=True))
        print(text_table(rows, single_shot.COLUMNS))
        result["single_shot"] = rows
    if args.only != "single-shot":
        for dropout in (0.0, 0.3):
            print(f"\nrounds (section 5.2): {args.users} users, {args.rounds} rounds of {rounds.BATCH}, target "
                  f"{rounds.TARGET.colour} {rounds.TARGET.shape} on {rounds.TARGET.background}, prompt dropout {dropout}",
                  flush=True)
            rows = rounds.run(miniature, args.users, args.rounds, prompt_dropout=dropout,
                              log=lambda m: print(m, flush=True))
            print(text_table(rows, rounds.COLUMNS))
            result[f"rounds_dropout_{dropout}"] = rows
    result["seconds"] = round(time.perf_counter() - begin)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
