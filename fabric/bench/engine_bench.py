"""FABRIC's cost against vanilla sampling: `python -m fabric.bench [--quick | --tiny]`.

An embedded default that needs no webui, weights or GPU: a full-size SD1.5-shaped ldm UNet
(configs/v1-inference.yaml, 860M parameters) with random weights, on CUDA in fp16 when present and
otherwise on the CPU in fp32 at a small latent. It samples one Euler schedule (k-diffusion's
discrete sigmas, fractional timesteps by log-sigma interpolation, c_in scaling, CFG with
[cond; uncond] rows in one UNet call) vanilla and with FABRIC attached (schedule start 0, end 0.8,
strength 0.8, neg_scale 0.5), interleaved in the same run, and prints:

1. Sampling: references per set, batch, latent, f (fraction of steps FABRIC is scheduled on),
   vanilla and FABRIC seconds per step, their ratio, the floor 1 + f*R/(2B) (R = references run per
   step, liked + disliked; B = images; design.md section 4), ratio / floor, and peak memory.
   Extra rows: FABRIC attached with weights 0 ("off"), a schedule window that contains no step
   ("outside") and the token budget on ("budget").
2. Where the time of a scheduled step goes: the reference pass and the main pass (for runs whose
   references ran in UNet calls of their own; the "references" column says where they ran:
   "in call" is the engine's default where safe, --separate-passes forces the fallback).
3. The weighted attention (fabric.engine.attention.weighted_attention) against plain SDPA of the same
   shapes without weights, for SD1.5's attn1 shapes at the benchmark's latent sizes.

Sizes. CPU: --quick latent 16x16, 1 and 2 references per set, batch 1 and 2, 4 steps, 3 timed
repetitions, a warm-up step of vanilla only (per-step medians absorb a first-call outlier),
off/outside rows at 2+2 (about 4 minutes on 2 idle cores); the default (full) run adds
4 and 8 references and the off/outside/budget rows at 8+8 (about 10-12 minutes). Every row shows
the ratio of the medians and, beside it, the spread (min/median/max) of the per-repetition ratios.
CUDA (fp16 under autocast, as the webui): latent 64 (--quick) or 64 and 128. --latent, --refs,
--batch, --steps, --reps override; --tiny is a 1M-parameter UNet for the tests.

The UNet's own attention (vanilla, reference pass, attn2) is torch's SDPA, swapped in class-wide as
the webui's "sdp" optimisation does (--host-attention ldm keeps ldm's einsum attention).

Seconds per step: every step of every timed repetition is timed on its own (after a warm-up step of
every configuration), by the wall clock and by this process's CPU time; --clock picks the one the
tables use. On the CPU the default is one thread and CPU time: on a machine shared with other
processes, multi-threaded (OpenMP) wall-clock timings of a step vary by 5x, whole ops wait for a
descheduled thread, while one thread's CPU time is the work (--threads 0 --clock wall for torch's
threads and the wall clock; the table then also shows the CPU-time ratio/floor). s/step = f * median(scheduled steps) + (1 - f) * median(other steps), the
medians taken over all timed repetitions. Vanilla steps are all alike: their median over all steps.
Peak memory: CUDA max_memory_allocated, or on the CPU the process's resident high-water mark
(VmHWM, reset before each run through /proc/self/clear_refs after malloc_trim); both absolute
(weights included) and as the growth over the level before the run ("work").

The last line of the output is one JSON object with every number of the tables.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..engine.attention import weighted_attention
from ..engine.unet_hooks import Fabric
from ..engine.references import LatentCache, Reference
from ..engine.schedule import DISLIKED, LIKED, Schedule
from ..sampler import EulerSampler, alphas_cumprod, clock, elapsed
from .text_table import text_table

# configs/v1-inference.yaml of Stable Diffusion 1.x.
SD15_CONFIG = dict(
    in_channels=4,
    out_channels=4,
    model_channels=320,
    attention_resolutions=[4, 2, 1],
    num_res_blocks=2,
    channel_mult=[1, 2, 4, 4],
    num_heads=8,
    use_spatial_transformer=True,
    transformer_depth=1,
    context_dim=768,
    use_checkpoint=False,
    legacy=False,
)
# A small UNet of the same structure, for --tiny (tests).
TINY_CONFIG = dict(
    in_channels=4,
    out_channels=4,
    model_channels=32,
    attention_resolutions=[1, 2],
    num_res_blocks=1,
    channel_mult=[1, 2, 2],
    num_heads=2,
    use_spatial_transformer=True,
    transformer_depth=1,
    context_dim=32,
    use_checkpoint=False,
    legacy=False,
)
CONTEXT_TOKENS = 77
CFG_SCALE = 7.0
CLOCKS = ("wall", "cpu")
EXTRAS = ("off", "outside", "budget")
BENCH_SCHEDULE = Schedule(strength=0.8, start=0.0, end=0.8, min_strength=0.0, neg_scale=0.5)
# The budget row's token_budget: this many times the own tokens of the largest attn1 layer (h*w),
# per set and layer. At 8 references the full-resolution layers pool 2x2 once (8 -> 2 h*w).
BUDGET_FACTOR = 2


# -- model ----------------------------------------------------------------------------------------


def build_unet(config: dict, device: torch.device, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """An ldm UNetModel of `config` with random weights (a fresh one outputs exactly zero).

    Built on the meta device and filled in place: weights ~ N(0, 1/fan_in), biases ~ N(0, 0.02^2),
    norm scales 1.
    """
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):
        unet = UNetModel(image_size=32, **config)
    unet = unet.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if param.dim() > 1:
                param.normal_(0.0, 1.0 / math.sqrt(param[0].numel()), generator=generator)
            elif name.endswith("bias"):
                param.normal_(0.0, 0.02, generator=generator)
            else:
                param.fill_(1.0)
        for buffer in unet.buffers():
            buffer.zero_()
    return unet.to(dtype).eval().requires_grad_(False)


def attn1_shapes(config: dict, latent: int) -> list[tuple[str, int, int, int, int]]:
    """(name, tokens, channels, heads, layers) of the UNet's attn1 shapes at a square latent."""
    shapes: dict[int, list] = {}
    ds = 1
    for level, mult in enumerate(config["channel_mult"]):
        if ds in config["attention_resolutions"]:
            shapes[ds] = [mult * config["model_channels"], 2 * config["num_res_blocks"] + 1]
        ds *= 2
    ds //= 2
    channels = config["channel_mult"][-1] * config["model_channels"]
    if ds in shapes:
        shapes[ds][1] += 1
    else:
        shapes[ds] = [channels, 1]  # the middle block
    out = []
    for ds, (channels, layers) in sorted(shapes.items()):
        side = -(-latent // ds)
        out.append((f"1/{ds}", side * side, channels, config["num_heads"], layers))
    return out


def sdp_attention_forward(self, x, context=None, mask=None, **kwargs):
    """ldm CrossAttention.forward on torch's SDPA, as the webui's "sdp" cross-attention optimisation."""
    heads = self.heads
    context = x if context is None else context
    q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
    batch = q.shape[0]
    q, k, v = (t.view(batch, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
    if mask is not None:
        mask = mask.view(batch, 1, 1, -1).bool()
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out = out.transpose(1, 2).reshape(batch, -1, heads * out.shape[-1]).to(q.dtype)
    return self.to_out(out)


@contextlib.contextmanager
def host_attention(name: str):
    """The attention every CrossAttention runs outside FABRIC: "sdp" (torch's SDPA, replacing
    CrossAttention.forward class-wide for the benchmark, as the webui does) or "ldm" (ldm's own
    einsum attention, which materialises the logits)."""
    if name == "ldm":
        yield
        return
    from ldm.modules.attention import CrossAttention

    original = CrossAttention.__dict__["forward"]
    CrossAttention.forward = sdp_attention_forward
    try:
        yield
    finally:
        CrossAttention.forward = original


# -- memory ---------------------------------------------------------------------------------------


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


class PeakMemory:
    """Peak memory of a block: CUDA max allocated, or the CPU resident high-water mark."""

    def __init__(self, device: torch.device):
        self.device = device
        self.libc = _libc() if device.type == "cpu" else None
        self.method = self._method()

    def _method(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated"
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._status("VmHWM")
            return "RSS high-water mark (VmHWM, reset via /proc/self/clear_refs after malloc_trim)"
        except OSError:
            return "unavailable"

    @staticmethod
    def _status(field_name: str) -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024.0
        raise OSError(field_name)

    @contextlib.contextmanager
    def measure(self):
        result = {"peak_mb": float("nan"), "work_mb": float("nan")}
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device) / 2**20
            yield result
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.method != "unavailable":
            if self.libc is not None:
                self.libc.malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            base = self._status("VmRSS")
            yield result
            peak = self._status("VmHWM")
        else:
            yield result
            return
        result["peak_mb"] = peak
        result["work_mb"] = peak - base


# -- the benchmark --------------------------------------------------------------------------------


@dataclass
class Options:
    config: dict
    latents: list[int]
    refs: list[int]
    batches: list[int]
    steps: int
    reps: int
    extra_refs: int  # references per set of the extra rows (0: none)
    extras: tuple[str, ...]  # which extra rows: off, outside, budget
    attention_reps: int
    device: torch.device
    dtype: torch.dtype
    label: str
    threads: int | None = None
    clock: str = "wall"
    host_attention: str = "sdp"
    warmup: str = "all"  # warm-up step for every configuration, or "vanilla" only (--quick)
    fuse: bool = True  # the engine's default: reference rows inside the UNet call where safe


@dataclass
class Run:
    """The timed runs of one configuration."""

    kind: str  # vanilla, fabric, off, outside, budget
    refs: int
    batch: int
    schedule: Schedule
    token_budget: int = 0
    scheduled: list[bool] = field(default_factory=list)
    times: list[list[tuple[float, float]]] = field(default_factory=list)  # per repetition, per step: (wall, cpu)
    reference_s: list[tuple[float, float]] = field(default_factory=list)  # per scheduled step, all repetitions
    peak: dict | None = None
    output: torch.Tensor | None = None
    mode: str = "-"  # where the reference rows ran: "in call", "separate" (own UNet calls)


def _reference(key: str, seed: int, channels: int = 4) -> Reference:
    def encode(height: int, width: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed * 1000 + height * 31 + width)
        return torch.randn(channels, height, width, generator=generator)

    return Reference(key=key, encode=encode)


class Bench:
    def __init__(self, options: Options, log: Callable[[str], None]):
        self.o = options
        self.log = log
        begin = time.perf_counter()
        self.unet = build_unet(options.config, options.device, options.dtype)
        self.build_s = time.perf_counter() - begin
        self.alphas = alphas_cumprod()
        self.sampler = EulerSampler(self.unet, self.alphas, options.steps, options.device, options.dtype)
        self.memory = PeakMemory(options.device)
        self.cache = LatentCache(capacity=256)
        n_max = max(options.refs + [options.extra_refs])
        self.liked = [_reference(f"liked{i:02d}", 100 + i) for i in range(n_max)]
        self.disliked = [_reference(f"disliked{i:02d}", 200 + i) for i in range(n_max)]
        generator = torch.Generator().manual_seed(1234)
        ctx_dim = options.config["context_dim"]
        self.empty = torch.randn(1, CONTEXT_TOKENS, ctx_dim, generator=generator)
        self.conds = torch.randn(max(options.batches), CONTEXT_TOKENS, ctx_dim, generator=generator)
        self.noise = {}

    def scheduled(self, schedule: Schedule) -> list[bool]:
        weights = [schedule.weights(t, len(self.alphas)) for t in self.sampler.timesteps]
        return [w[LIKED] > 0 or w[DISLIKED] > 0 for w in weights]

    def outside_schedule(self) -> Schedule:
        """A window between the progress of the last two steps: it contains no step."""
        progress = [BENCH_SCHEDULE.progress(t, len(self.alphas)) for t in self.sampler.timesteps]
        a, b = sorted(progress)[-2:]
        return Schedule(strength=0.8, start=a + 0.25 * (b - a), end=a + 0.75 * (b - a), neg_scale=0.5)

    def fabric(self, run: Run) -> Fabric:
        fab = Fabric(
            self.unet,
            references={LIKED: self.liked[: run.refs], DISLIKED: self.disliked[: run.refs]},
            schedule=run.schedule,
            alphas_cumprod=self.alphas,
            reference_kwargs={"context": self.empty},
            latent_cache=self.cache,
            token_budget=run.token_budget,
            fuse_reference_rows=self.o.fuse,
        )
        # time the separate reference passes (a private method; optional), one set each
        method = "_reference_pass"
        reference_pass = getattr(fab, method, None)
        if reference_pass is not None:

            def timed(*args, **kwargs):
                self.sampler.sync()
                begin = clock()
                try:
                    return reference_pass(*args, **kwargs)
                finally:
                    self.sampler.sync()
                    wall, cpu = elapsed(begin)
                    fab._bench_reference_s[0] += wall
                    fab._bench_reference_s[1] += cpu

            setattr(fab, method, timed)
        fab._bench_reference_s = [0.0, 0.0]
        return fab

    def execute(self, run: Run, latent: int, *, record: bool, steps: int | None = None, memory: bool = False):
        key = (run.batch, latent)
        if key not in self.noise:
            generator = torch.Generator().manual_seed(42 + latent)
            self.noise[key] = torch.randn(run.batch, 4, latent, latent, generator=generator)
        noise, cond = self.noise[key], self.conds[: run.batch]
        uncond = self.empty.expand(run.batch, -1, -1)
        fab = None if run.kind == "vanilla" else self.fabric(run)
        measure = self.memory.measure() if memory else contextlib.nullcontext()
        with measure as peak:
            if fab is None:
                out, times = self.sampler.sample(noise, cond, uncond, CFG_SCALE, steps)
            else:
                step_reference_s = []
                with fab:
                    # per-step reference seconds: wrap the step loop through the sampler's steps
                    out, times = self._sample_with_reference_times(fab, noise, cond, uncond, steps, step_reference_s)
        if memory:
            run.peak = peak
        if record:
            run.times.append(times)
            run.output = out.cpu()
            if fab is not None:
                run.reference_s.extend(s for s, on in zip(step_reference_s, run.scheduled) if on)
                if fab.fused_calls or fab.reference_calls:
                    run.mode = "in call" if fab.fused_calls and not fab.reference_calls else "separate"
        if fab is not None and fab.failure is not None:
            raise RuntimeError(f"FABRIC failed during the benchmark: {fab.failure!r}") from fab.failure
        return fab

    def _sample_with_reference_times(self, fab, noise, cond, uncond, steps, per_step):
        # Read the reference seconds after each step. Not by a hook on the UNet: the engine runs
        # the references in separate calls when it finds another hook there.
        def after_step():
            per_step.append(tuple(fab._bench_reference_s))
            fab._bench_reference_s = [0.0, 0.0]

        return self.sampler.sample(noise, cond, uncond, CFG_SCALE, steps, after_step)

    # -- tables ---------------------------------------------------------------------------------

    def sampling(self) -> tuple[list[dict], list[dict]]:
        o = self.o
        rows, breakdown = [], []
        for latent in o.latents:
            runs: list[Run] = []
            vanilla = {b: Run("vanilla", 0, b, BENCH_SCHEDULE) for b in o.batches}
            for b in o.batches:
                runs.append(vanilla[b])
                runs += [Run("fabric", n, b, BENCH_SCHEDULE) for n in o.refs]
            b, n = o.batches[0], o.extra_refs
            if n and "off" in o.extras:  # attached, weights 0
                runs.append(Run("off", n, b, Schedule(strength=0.0, min_strength=0.0)))
            if n and "outside" in o.extras:  # attached, no step inside the window
                runs.append(Run("outside", n, b, self.outside_schedule()))
            if n and "budget" in o.extras:
                budget = BUDGET_FACTOR * latent * latent  # x the own tokens of the largest attn1 layer
                runs.append(Run("budget", n, b, BENCH_SCHEDULE, token_budget=budget))
            for run in runs:
                run.scheduled = [False] * o.steps if run.kind == "vanilla" else self.scheduled(run.schedule)
            begin = time.perf_counter()
            for run in runs:  # warm-up: one (scheduled) step of every configuration, or of vanilla only
                if o.warmup == "all" or run.kind == "vanilla":
                    self.execute(run, latent, record=False, steps=1)
            self.log(f"# latent {latent}: warm-up {time.perf_counter() - begin:.1f}s")
            for rep in range(o.reps):
                begin = time.perf_counter()
                order = runs if rep % 2 == 0 else runs[::-1]
                for run in order:
                    self.execute(run, latent, record=True, memory=(rep == 0))
                self.log(f"# latent {latent}: repetition {rep + 1}/{o.reps} {time.perf_counter() - begin:.1f}s")
            for run in runs:
                if run.kind == "vanilla":
                    continue
                van = vanilla[run.batch]
                rows.append(self._row(run, van, latent))
                breakdown.append(self._breakdown(run, van, latent))
        return rows, breakdown

    @staticmethod
    def _per_step(run: Run, van: Run, clock_index: int, rep: int | None = None) -> tuple[float, float, float | None, float | None]:
        """(vanilla s/step, FABRIC s/step, median scheduled step, median other step) on one clock,
        over every timed repetition or over repetition `rep` alone."""
        van_times = van.times if rep is None else van.times[rep:rep + 1]
        run_times = run.times if rep is None else run.times[rep:rep + 1]
        vanilla = statistics.median(t[clock_index] for times in van_times for t in times)
        sched = [t[clock_index] for times in run_times for t, on in zip(times, run.scheduled) if on]
        other = [t[clock_index] for times in run_times for t, on in zip(times, run.scheduled) if not on]
        f = sum(run.scheduled) / len(run.scheduled)
        sched_s = statistics.median(sched) if sched else None
        other_s = statistics.median(other) if other else None
        fabric = f * (sched_s or 0.0) + (1 - f) * (other_s or 0.0)
        return vanilla, fabric, sched_s, other_s

    def _row(self, run: Run, van: Run, latent: int) -> dict:
        clock_index = CLOCKS.index(self.o.clock)
        vanilla_s, fabric_s, _, other_s = self._per_step(run, van, clock_index)
        f = sum(run.scheduled) / len(run.scheduled)
        refs_run = 2 * run.refs if f > 0 else 0
        floor = 1 + f * refs_run / (2 * run.batch)
        ratio = fabric_s / vanilla_s
        # each repetition's ratio (both configurations ran in it, one after the other): the spread
        # tells noise from effect
        per_rep = []
        for rep in range(min(len(run.times), len(van.times))):
            van_rep, fab_rep, _, _ = self._per_step(run, van, clock_index, rep)
            per_rep.append(fab_rep / van_rep)
        row = {
            "kind": run.kind,
            "mode": run.mode,
            "refs_per_set": run.refs,
            "batch": run.batch,
            "latent": latent,
            "f": round(f, 4),
            "vanilla_s": vanilla_s,
            "fabric_s": fabric_s,
            "ratio": ratio,
            "ratio_min": min(per_rep),
            "ratio_median": statistics.median(per_rep),
            "ratio_max": max(per_rep),
            "ratio_spread": f"{min(per_rep):.2f}/{statistics.median(per_rep):.2f}/{max(per_rep):.2f}",
            "floor": floor,
            "ratio_over_floor": ratio / floor,
            "peak_vanilla_mb": van.peak["peak_mb"],
            "peak_fabric_mb": run.peak["peak_mb"],
            "work_vanilla_mb": van.peak["work_mb"],
            "work_fabric_mb": run.peak["work_mb"],
            "unscheduled_ratio": other_s / vanilla_s if other_s is not None else None,
            "token_budget": run.token_budget,
            "max_abs_diff_vs_vanilla": float((run.output - van.output).abs().max()),
            "steps": len(run.scheduled),
            "timed_steps": sum(len(t) for t in run.times),
        }
        if self.o.device.type == "cpu" and self.o.clock == "wall":
            # the same on the process's CPU time: far less sensitive to other processes on the machine
            vanilla_cpu, fabric_cpu, _, _ = self._per_step(run, van, CLOCKS.index("cpu"))
            row["ratio_cpu"] = fabric_cpu / vanilla_cpu
            row["ratio_over_floor_cpu"] = row["ratio_cpu"] / floor
        return row

    def _breakdown(self, run: Run, van: Run, latent: int) -> dict:
        clock_index = CLOCKS.index(self.o.clock)
        vanilla_s, _, step, _ = self._per_step(run, van, clock_index)
        head = {"kind": run.kind, "mode": run.mode, "refs_per_set": run.refs, "batch": run.batch, "latent": latent}
        if step is None or not run.reference_s or run.mode != "separate":
            return head  # in the call, the references' time is not separable from the main pass
        reference = statistics.median(t[clock_index] for t in run.reference_s)
        main = step - reference
        refs_run = 2 * run.refs
        return {
            **head,
            "step_s": step,
            "reference_s": reference,
            "main_s": main,
            # the reference pass against its share of the floor, R / (2B) vanilla steps
            "reference_over_vanilla": reference / vanilla_s,
            "reference_floor": refs_run / (2 * run.batch),
            # the main pass against a vanilla step: longer attn1 keys, reference K/V projection
            "main_over_vanilla": main / vanilla_s,
            "scheduled_ratio": step / vanilla_s,
            "scheduled_floor": 1 + refs_run / (2 * run.batch),
        }

    def attention(self) -> list[dict]:
        o = self.o
        rows = []
        generator = torch.Generator(device=o.device).manual_seed(7)
        for latent in o.latents:
            for name, tokens, channels, heads, layers in attn1_shapes(o.config, latent):
                d = channels // heads
                for batch in o.batches:
                    shape = (batch, heads, tokens, d)
                    q, k0, v0 = (
                        torch.randn(shape, generator=generator, device=o.device).to(o.dtype) for _ in range(3)
                    )
                    own = _median_time(lambda: F.scaled_dot_product_attention(q, k0, v0), o.attention_reps, o.device, o.clock)
                    for n in o.refs:
                        keys = tokens * (1 + n)
                        k, v = (
                            torch.randn(batch, heads, keys, d, generator=generator, device=o.device).to(o.dtype)
                            for _ in range(2)
                        )
                        bias = torch.cat(
                            [torch.zeros(tokens), torch.full((tokens * n,), math.log(0.8))]
                        ).to(o.device)
                        plain = _median_time(lambda: F.scaled_dot_product_attention(q, k, v), o.attention_reps, o.device, o.clock)
                        weighted = _median_time(lambda: weighted_attention(q, k, v, bias), o.attention_reps, o.device, o.clock)
                        rows.append(
                            {
                                "latent": latent,
                                "layer": name,
                                "layers": layers,
                                "tokens": tokens,
                                "channels": channels,
                                "heads": heads,
                                "batch": batch,
                                "refs": n,
                                "keys": keys,
                                "sdpa_own_ms": own * 1e3,
                                "sdpa_ms": plain * 1e3,
                                "weighted_ms": weighted * 1e3,
                                "weighted_over_sdpa": weighted / plain,
                            }
                        )
        return rows


def _median_time(fn: Callable[[], torch.Tensor], reps: int, device: torch.device, which: str = "wall") -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    index = CLOCKS.index(which)
    with torch.no_grad():
        for _ in range(2):
            fn()
        times = []
        for _ in range(reps):
            sync()
            begin = clock()
            fn()
            sync()
            times.append(elapsed(begin)[index])
    return statistics.median(times)


# -- output -----------------------------------------------------------------------------------------


SAMPLING_COLUMNS = [
    ("kind", "kind", ""),
    ("references", "mode", ""),
    ("refs/set", "refs_per_set", "d"),
    ("B", "batch", "d"),
    ("latent", "latent", "d"),
    ("f", "f", ".2f"),
    ("vanilla s/step", "vanilla_s", ".3f"),
    ("FABRIC s/step", "fabric_s", ".3f"),
    ("ratio", "ratio", ".3f"),
    ("per-rep min/med/max", "ratio_spread", ""),
    ("floor", "floor", ".3f"),
    ("ratio/floor", "ratio_over_floor", ".3f"),
    ("ratio/floor cpu", "ratio_over_floor_cpu", ".3f"),
    ("unsched ratio", "unscheduled_ratio", ".3f"),
    ("peak vanilla MB", "peak_vanilla_mb", ".0f"),
    ("peak FABRIC MB", "peak_fabric_mb", ".0f"),
    ("work vanilla MB", "work_vanilla_mb", ".0f"),
    ("work FABRIC MB", "work_fabric_mb", ".0f"),
]
BREAKDOWN_COLUMNS = [
    ("kind", "kind", ""),
    ("references", "mode", ""),
    ("refs/set", "refs_per_set", "d"),
    ("B", "batch", "d"),
    ("latent", "latent", "d"),
    ("sched step s", "step_s", ".3f"),
    ("ref pass s", "reference_s", ".3f"),
    ("main pass s", "main_s", ".3f"),
    ("ref/vanilla", "reference_over_vanilla", ".3f"),
    ("R/(2B)", "reference_floor", ".3f"),
    ("main/vanilla", "main_over_vanilla", ".3f"),
    ("sched ratio", "scheduled_ratio", ".3f"),
    ("sched floor", "scheduled_floor", ".3f"),
]
ATTENTION_COLUMNS = [
    ("latent", "latent", "d"),
    ("layer", "layer", ""),
    ("x", "layers", "d"),
    ("tokens", "tokens", "d"),
    ("C", "channels", "d"),
    ("B", "batch", "d"),
    ("refs", "refs", "d"),
    ("keys", "keys", "d"),
    ("SDPA own keys ms", "sdpa_own_ms", ".3f"),
    ("SDPA ms", "sdpa_ms", ".3f"),
    ("weighted ms", "weighted_ms", ".3f"),
    ("weighted/SDPA", "weighted_over_sdpa", ".3f"),
]


def options_from_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m fabric.bench", description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer sizes and references (about 4 min on a 2-core CPU)")
    size.add_argument("--tiny", action="store_true", help="a tiny UNet, for tests of the machinery only")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--latent", type=int, nargs="+", help="latent sizes (square)")
    parser.add_argument("--refs", type=int, nargs="+", help="references per set")
    parser.add_argument("--batch", type=int, nargs="+", help="batch sizes")
    parser.add_argument("--steps", type=int, help="sampling steps")
    parser.add_argument("--reps", type=int, help="timed repetitions after the warm-up")
    parser.add_argument("--extra-refs", type=int, help="references per set of the extra rows (0: none)")
    parser.add_argument(
        "--extras", nargs="*", choices=EXTRAS,
        help="extra rows: FABRIC attached with weights 0 (off), a window without steps (outside), token budget on",
    )
    parser.add_argument(
        "--clock", choices=CLOCKS,
        help="time steps by the wall clock (default on CUDA) or by this process's CPU time (default on the CPU)",
    )
    parser.add_argument(
        "--host-attention", choices=("sdp", "ldm"), default="sdp",
        help="the UNet's own attention: torch SDPA (default; the webui's 'sdp') or ldm's einsum attention",
    )
    parser.add_argument(
        "--threads", type=int,
        help="torch CPU threads (default on the CPU: 1, which with --clock cpu measures the work and not the "
        "other processes on the machine; 0: torch's default)",
    )
    parser.add_argument(
        "--separate-passes", action="store_true",
        help="run the references in UNet calls of their own (the engine's fallback) instead of inside the sampler's call",
    )
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    extras = EXTRAS
    if args.tiny:
        label, config = "tiny", TINY_CONFIG
        latents, refs, batches, steps, reps, extra, attention_reps = [8], [1, 2], [1, 2], 4, 1, 4, 3
    elif args.quick and cuda:
        label, config = "quick", SD15_CONFIG
        latents, refs, batches, steps, reps, extra, attention_reps = [64], [1, 2, 4, 8], [1, 2], 4, 3, 8, 10
    elif args.quick:  # about 4 minutes on a 2-core CPU
        label, config = "quick", SD15_CONFIG
        latents, refs, batches, steps, reps, extra, attention_reps = [16], [1, 2], [1, 2], 4, 3, 2, 5
        extras = ("off", "outside")
    elif cuda:
        label, config = "full", SD15_CONFIG
        latents, refs, batches, steps, reps, extra, attention_reps = [64, 128], [1, 2, 4, 8], [1, 2], 4, 5, 8, 20
    else:  # ~6-8 minutes on a 2-core CPU
        label, config = "full", SD15_CONFIG
        latents, refs, batches, steps, reps, extra, attention_reps = [16], [1, 2, 4, 8], [1, 2], 4, 3, 8, 7
    return Options(
        config=config,
        latents=args.latent or latents,
        refs=args.refs or refs,
        batches=args.batch or batches,
        steps=args.steps or steps,
        reps=args.reps or reps,
        extra_refs=extra if args.extra_refs is None else args.extra_refs,
        extras=tuple(extras if args.extras is None else args.extras),
        attention_reps=attention_reps,
        device=device,
        dtype=dtype,
        label=label,
        threads=(1 if not cuda else None) if args.threads is None else (args.threads or None),
        clock=args.clock or ("wall" if cuda else "cpu"),
        host_attention=args.host_attention,
        warmup="vanilla" if args.quick and not cuda else "all",
        fuse=not args.separate_passes,
    )


def main(argv: list[str] | None = None) -> dict:
    o = options_from_args(argv)
    threads = torch.get_num_threads()
    if o.threads:
        torch.set_num_threads(o.threads)
    try:
        with host_attention(o.host_attention):
            return _main(o)
    finally:
        torch.set_num_threads(threads)


def _main(o: Options) -> dict:
    started = time.perf_counter()

    def log(line: str) -> None:
        print(line, flush=True)

    bench = Bench(o, log)
    device_name = torch.cuda.get_device_name(o.device) if o.device.type == "cuda" else _cpu_name()
    load_before = os.getloadavg()[0]
    log(
        f"# FABRIC benchmark ({o.label}): {o.device.type} ({device_name}, {torch.get_num_threads()} threads), "
        f"{str(o.dtype).replace('torch.', '')}, torch {torch.__version__}; "
        f"UNet {sum(p.numel() for p in bench.unet.parameters()) / 1e6:.0f}M parameters built in {bench.build_s:.1f}s"
    )
    log(
        f"# Euler, {o.steps} steps, CFG {CFG_SCALE}; FABRIC start {BENCH_SCHEDULE.start} end {BENCH_SCHEDULE.end} "
        f"strength {BENCH_SCHEDULE.strength} neg_scale {BENCH_SCHEDULE.neg_scale}; {o.reps} timed repetitions "
        f"after a warm-up; clock: {o.clock}; host attention: {o.host_attention}; memory: {bench.memory.method}; load average {load_before:.2f}"
    )
    rows, breakdown = bench.sampling()
    attention = bench.attention()
    log("")
    log("## Sampling (s/step: medians over steps and repetitions; floor = 1 + f*R/(2B), R = liked + disliked)")
    log(text_table(rows, SAMPLING_COLUMNS))
    log("")
    log("## A scheduled step: reference pass vs main pass (medians)")
    log(text_table(breakdown, BREAKDOWN_COLUMNS))
    log("")
    log("## attn1 alone: weighted_attention (log-weight bias) vs SDPA without weights (x = layers of that shape)")
    log(text_table(attention, ATTENTION_COLUMNS))
    load_after = os.getloadavg()[0]
    log(f"# total {time.perf_counter() - started:.1f}s; load average {load_after:.2f}")
    result = {
        "device": o.device.type if o.device.type != "cuda" else f"cuda ({device_name})",
        "dtype": str(o.dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "mode": o.label,
        "steps": o.steps,
        "reps": o.reps,
        "device_name": device_name,
        "clock": o.clock,
        "host_attention": o.host_attention,
        "fuse_reference_rows": o.fuse,
        "load_average": [load_before, load_after],
        "memory": bench.memory.method,
        "rows": rows,
        "breakdown": breakdown,
        "attention": attention,
    }
    result = _finite(result)
    print(json.dumps(result, allow_nan=False))
    return result


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _finite(value):
    """NaN and infinities (an unavailable measurement) as null, so the line is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    main(sys.argv[1:])
