"""FABRIC's cost in a running webui: `python -m fabric.bench.webui_bench [--url URL] [--quick]`.

Where `fabric.bench` times the engine on a bare UNet, this times what a user of the HTTP API
waits for: whole `/sdapi/v1/txt2img` requests to a webui (A1111 or Forge) that has this
extension installed, vanilla and with FABRIC, interleaved in one run so that both see the same
machine. The feedback images are uploaded once to `/fabric/v1/images` and sent by id, so no
request carries image data.

Every repetition runs every configuration once (the order reversed on odd repetitions), after a
warm-up request of each. A row gives the ratio of the medians (FABRIC over vanilla), and the
spread of the per-repetition ratios (each FABRIC request over the vanilla request of the same
repetition) as min / median / max, so that noise and effect can be told apart.

Peak memory is the server process's resident high-water mark (VmHWM), reset before each request
through /proc/PID/clear_refs; it is read where the server runs on this machine and we may write
there (Linux, the same user or root), else the column shows "-". The server is found by the TCP
port it listens on.

Each FABRIC response is checked: its infotext must name FABRIC and no "FABRIC error", so a row
never times a job that fell back to vanilla. The last line of the output is one JSON object with
every number of the table.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
from PIL import Image

from .text_table import text_table

QUICK = dict(width=64, height=64, steps=4, refs=[1, 8], budgets=[256], reps=3)
FULL = dict(width=128, height=128, steps=8, refs=[1, 2, 4, 8], budgets=[256], reps=3)


@dataclass
class Config:
    label: str
    refs: int  # liked images, and as many disliked ones; 0: vanilla
    token_budget: int = 0
    seconds: list[float] = field(default_factory=list)  # per repetition
    peak_mb: list[float] = field(default_factory=list)
    infotext: str = ""

    def args(self, ids: dict[str, list[str]]) -> dict:
        return {
            "enabled": True, "liked": ids["liked"][: self.refs], "disliked": ids["disliked"][: self.refs],
            "token_budget": self.token_budget,
        }


def picture(seed: int, width: int, height: int) -> Image.Image:
    """A smooth random picture, distinct per seed."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.BICUBIC)


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class ServerMemory:
    """The webui process's peak resident memory, through /proc (None where it cannot be read)."""

    def __init__(self, url: str):
        self.pid = _pid_listening_on(urlparse(url).port or 80)

    def reset(self) -> bool:
        if self.pid is None:
            return False
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # 5: reset the peak RSS
            return True
        except OSError:
            return False

    def peak_mb(self) -> float | None:
        if self.pid is None:
            return None
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None


def _pid_listening_on(port: int) -> int | None:
    """The process that listens on a local TCP port (Linux /proc), or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except OSError:
            continue
    return None


class WebuiBench:
    def __init__(self, url: str, *, width: int, height: int, steps: int, sampler: str, cfg: float,
                 log=lambda text: print(text, file=sys.stderr)):
        self.client = httpx.Client(base_url=url.rstrip("/"), timeout=3600)
        self.url = url
        self.payload = {
            "prompt": "a cottage by a lake, evening light", "negative_prompt": "blurry", "seed": 1234,
            "steps": steps, "width": width, "height": height, "sampler_name": sampler, "cfg_scale": cfg,
            "batch_size": 1, "n_iter": 1, "save_images": False, "send_images": True,
        }
        self.memory = ServerMemory(url)
        self.log = log

    def upload(self, count: int) -> dict[str, list[str]]:
        """`count` liked and `count` disliked pictures in the server's store, by id."""
        ids = {}
        width, height = self.payload["width"], self.payload["height"]
        for offset, name in ((0, "liked"), (1000, "disliked")):
            images = [png_base64(picture(offset + i, width, height)) for i in range(count)]
            response = self.client.post("/fabric/v1/images", json={"images": images})
            response.raise_for_status()
            ids[name] = response.json()["ids"]
        return ids

    def request(self, config: Config, ids) -> tuple[float, float | None, str]:
        body = dict(self.payload)
        if config.refs:
            body["alwayson_scripts"] = {"FABRIC": {"args": [config.args(ids)]}}
        measured = self.memory.reset()
        begin = time.perf_counter()
        response = self.client.post("/sdapi/v1/txt2img", json=body)
        seconds = time.perf_counter() - begin
        if response.status_code != 200:
            raise RuntimeError(f"{config.label}: HTTP {response.status_code}: {response.text[:500]}")
        infotext = json.loads(response.json()["info"])["infotexts"][0]
        if config.refs and ("FABRIC" not in infotext or "FABRIC error" in infotext):
            raise RuntimeError(f"{config.label}: FABRIC was not applied: {infotext}")
        return seconds, self.memory.peak_mb() if measured else None, infotext

    def run(self, configs: list[Config], reps: int) -> None:
        ids = self.upload(max(c.refs for c in configs))
        for config in configs:  # warm-up: loads, caches, first-call costs
            self.request(config, ids)
        for rep in range(reps):
            order = configs if rep % 2 == 0 else configs[::-1]
            for config in order:
                seconds, peak, config.infotext = self.request(config, ids)
                config.seconds.append(seconds)
                if peak is not None:
                    config.peak_mb.append(peak)
                self.log(f"# repetition {rep + 1}/{reps} {config.label}: {seconds:.1f}s")


def rows(vanilla: Config, configs: list[Config]) -> list[dict]:
    out = []
    base = statistics.median(vanilla.seconds)
    for config in [vanilla, *configs]:
        per_rep = [s / v for s, v in zip(config.seconds, vanilla.seconds)]
        out.append({
            "config": config.label,
            "refs_per_set": config.refs,
            "token_budget": config.token_budget,
            "median_s": statistics.median(config.seconds),
            "ratio": statistics.median(config.seconds) / base,
            "ratio_min": min(per_rep),
            "ratio_median": statistics.median(per_rep),
            "ratio_max": max(per_rep),
            "seconds": config.seconds,
            "peak_mb": max(config.peak_mb) if config.peak_mb else None,
        })
    return out


COLUMNS = [
    ("configuration", "config", ""),
    ("median s", "median_s", ".2f"),
    ("ratio", "ratio", ".2f"),
    ("per-rep min", "ratio_min", ".2f"),
    ("median", "ratio_median", ".2f"),
    ("max", "ratio_max", ".2f"),
    ("peak MB", "peak_mb", ".0f"),
]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m fabric.bench.webui_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860", help="the webui, started with --api")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['width']}x{QUICK['height']}, {QUICK['steps']} steps, 1+1 and 8+8 (a few minutes on a CPU)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("W", "H"))
    parser.add_argument("--steps", type=int)
    parser.add_argument("--refs", type=int, nargs="+", help="liked images per configuration (as many disliked)")
    parser.add_argument("--budgets", type=int, nargs="*", help="token budgets, each run at the largest --refs")
    parser.add_argument("--reps", type=int, help="timed repetitions (at least 3 for a spread)")
    parser.add_argument("--sampler", default="Euler")
    parser.add_argument("--cfg", type=float, default=7.0)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    width, height = args.size or (preset["width"], preset["height"])
    steps = args.steps or preset["steps"]
    refs = args.refs or preset["refs"]
    budgets = preset["budgets"] if args.budgets is None else args.budgets
    reps = args.reps or preset["reps"]

    vanilla = Config("vanilla", 0)
    configs = [Config(f"{n}+{n}", n) for n in refs]
    configs += [Config(f"{max(refs)}+{max(refs)}, token_budget {b}", max(refs), b) for b in budgets]
    bench = WebuiBench(args.url, width=width, height=height, steps=steps, sampler=args.sampler, cfg=args.cfg)
    begin = time.perf_counter()
    bench.run([vanilla, *configs], reps)
    result = {
        "url": args.url,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "request": {k: bench.payload[k] for k in ("width", "height", "steps", "sampler_name", "cfg_scale", "batch_size")},
        "reps": reps,
        "server_pid": bench.memory.pid,
        "seconds": time.perf_counter() - begin,
        "rows": rows(vanilla, configs),
    }
    print(f"# whole txt2img requests to {args.url}: {width}x{height}, {steps} steps, {args.sampler}, CFG {args.cfg:g}, "
          f"batch 1, {reps} repetitions interleaved; {result['machine']['cpu']}, {result['machine']['cores']} cores")
    print(text_table(result["rows"], COLUMNS))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
