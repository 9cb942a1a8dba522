"""FABRIC's main job on the miniature, no webui needed: the same seeds without and with feedback.

    python -m fabric.miniature.demo [--seeds 12] [--out fabric-demo.png]

The prompt is "a circle"; it says nothing of colour or background, so the model chooses those by
itself, differently per seed. The liked images are red circles on white, the disliked ones blue
shapes on black. The picture shows the references, then from the same seeds a row of vanilla
images, one with the liked images alone and one with both sets (default settings), and the console
counts what the hand-written reader sees in each row.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from . import shapes
from .generate import Feedback, generate
from .model import WEIGHTS, load
from .reader import read

PROMPT = "a circle"


def demo_references() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Two red circles on white (liked), a blue square and circle on black (disliked)."""
    liked = [shapes.render(shapes.Factors("circle", "red", "white", half, x, y))
             for half, x, y in ((16.0, 30.0, 34.0), (13.0, 36.0, 28.0))]
    disliked = [shapes.render(shapes.Factors(shape, "blue", "black", 15.0, 32.0, 32.0))
                for shape in ("square", "circle")]
    return liked, disliked


def count(images: np.ndarray) -> dict[str, int]:
    readings = [read(image) for image in images]
    return {
        "red shape": sum(r.colour == "red" for r in readings),
        "white background": sum(r.background == "white" for r in readings),
        "red on white": sum(r.colour == "red" and r.background == "white" for r in readings),
        "blue shape": sum(r.colour == "blue" for r in readings),
        "black background": sum(r.background == "black" for r in readings),
        "a circle": sum(r.shape == "circle" for r in readings),
    }


def picture(rows: list[tuple[str, list[np.ndarray]]], scale: int = 2):
    """A labelled grid: one row per (label, images), tiles of 64*scale pixels."""
    from PIL import Image, ImageDraw

    tile, gap, label_w = shapes.SIZE * scale, 4, 92
    columns = max(len(images) for _, images in rows)
    width = label_w + columns * (tile + gap)
    height = len(rows) * (tile + gap) + gap
    canvas = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows):
        top = gap + r * (tile + gap)
        draw.text((6, top + tile // 2 - 6), label, fill=(20, 20, 20))
        for c, image in enumerate(images):
            big = Image.fromarray(image).resize((tile, tile), Image.NEAREST)
            canvas.paste(big, (label_w + c * (tile + gap), top))
    return canvas


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fabric.miniature.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=12, help="images per row (seeds 0 .. N-1; default 12)")
    parser.add_argument("--out", default="fabric-demo.png", help="the picture to write (default fabric-demo.png)")
    parser.add_argument("--weights", default=str(WEIGHTS), help=f"the miniature's weights (default {WEIGHTS})")
    args = parser.parse_args(argv)
    begin = time.perf_counter()

    def progress(name):
        def show(done, total):
            sys.stdout.write(f"\r  {name}: step {done}/{total}")
            sys.stdout.flush()
            if done == total:
                sys.stdout.write("\n")
        return show

    print("loading the miniature (regenerating its text encoder takes a few seconds) ...", flush=True)
    miniature = load(args.weights)
    liked, disliked = demo_references()
    seeds = list(range(args.seeds))
    outputs = {
        "vanilla": generate(miniature, PROMPT, seeds, on_step=progress("vanilla")),
        "liked": generate(miniature, PROMPT, seeds, Feedback(liked, []), on_step=progress("FABRIC, liked")),
        "both": generate(miniature, PROMPT, seeds, Feedback(liked, disliked), on_step=progress("FABRIC, both")),
    }
    labels = {"vanilla": "vanilla", "liked": "FABRIC liked", "both": "FABRIC both"}
    rows = [("liked", liked), ("disliked", disliked)] + [(labels[k], list(v)) for k, v in outputs.items()]
    out = Path(args.out).resolve()
    picture(rows).save(out)
    counts = {k: count(v) for k, v in outputs.items()}
    print(f'\nprompt "{PROMPT}", {len(seeds)} seeds, what the reader sees in each row:')
    print(f"  {'':17s} " + "".join(f"{labels[k]:>14s}" for k in counts))
    for factor in counts["vanilla"]:
        print(f"  {factor:17s} " + "".join(f"{counts[k][factor]:14d}" for k in counts))
    print(f"\nwrote {out} ({time.perf_counter() - begin:.0f} s)")


if __name__ == "__main__":
    main()
