"""python -m fabric.quality [--seeds 64] [--users 16] [--rounds 3] [--webui URL]: the effect tables, a JSON last line.

On the engine by default (the miniature's weights, fabric.miniature.generate); with --webui, the
same jobs go through a running webui's HTTP API (webui_generator.py), which must have the
miniature's checkpoint loaded (or be told it with --checkpoint).
"""
from __future__ import annotations

import argparse
import functools
import json
import platform
import time

import torch

from ..bench.text_table import text_table
from ..engine import Schedule
from ..miniature.generate import generate
from ..miniature.model import WEIGHTS, load
from . import rounds, single_shot
from .webui_generator import WebuiGenerator

# The rounds' settings: the defaults, the paper's prompt dropout, the neg scale that the
# single-shot table finds keeps the liked set's pull with both sets, and the liked images alone
# (neg scale 0: each round's farthest image is still collected, but weighs nothing).
ROUNDS = [
    ("defaults", 0.0, Schedule()),
    ("prompt dropout 0.3", 0.3, Schedule()),
    ("neg scale 0.2", 0.0, Schedule(neg_scale=0.2)),
    ("liked only", 0.0, Schedule(neg_scale=0.0)),
]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fabric.quality", description=__doc__.split(":")[1].split("\n")[0].strip())
    parser.add_argument("--seeds", type=int, default=64, help="seeds per single-shot row (default 64)")
    parser.add_argument("--users", type=int, default=16, help="simulated users in the rounds (default 16)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["single-shot", "rounds"], help="run one part")
    parser.add_argument("--weights", default=str(WEIGHTS), help=f"the miniature's weights (default {WEIGHTS})")
    parser.add_argument("--webui", metavar="URL", help="generate through this webui's HTTP API instead of the engine")
    parser.add_argument("--checkpoint", metavar="NAME", help="with --webui: load this checkpoint first")
    args = parser.parse_args(argv)
    begin = time.perf_counter()
    if args.webui:
        webui = WebuiGenerator(args.webui, args.checkpoint)
        result = {"machine": machine(), "webui": webui.describe()}
        print(f"FABRIC on the miniature in the {result['webui']} (this client: {result['machine']})", flush=True)
        images = webui
    else:
        result = {"machine": machine()}
        print(f"FABRIC on the miniature ({result['machine']})", flush=True)
        images = functools.partial(generate, load(args.weights))
    if args.only != "rounds":
        print(f"\nsingle shot: prompt \"a circle\", {args.seeds} seeds, liked red circles on white, "
              "disliked blue shapes on black", flush=True)
        rows = single_shot.run(images, list(range(args.seeds)), log=lambda m: print(m, flush=True))
        print(text_table(rows, single_shot.COLUMNS))
        result["single_shot"] = rows
    if args.only != "single-shot":
        for name, dropout, schedule in ROUNDS:
            print(f"\nrounds (section 5.2): {args.users} users, {args.rounds} rounds of {rounds.BATCH}, target "
                  f"{rounds.TARGET.colour} {rounds.TARGET.shape} on {rounds.TARGET.background}, {name}", flush=True)
            rows = rounds.run(images, args.users, args.rounds, prompt_dropout=dropout, schedule=schedule,
                              log=lambda m: print(m, flush=True))
            print(text_table(rows, rounds.COLUMNS))
            result[f"rounds_{name.replace(' ', '_')}"] = rows
    result["seconds"] = round(time.perf_counter() - begin)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
