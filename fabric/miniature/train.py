"""Trains the miniature from procedurally drawn images, with fixed seeds, on a CPU.

    python -m fabric.miniature.train [--out PATH] [--quick]

1. The autoencoder, on 32x32 crops first (its convolutions are local, and a crop costs a quarter
   of a full image), then on whole images; L1 reconstruction plus a small KL term.
2. The latent scale: 1 / the standard deviation of the training latents (SD1's 0.18215 is the
   same idea for its VAE).
3. The UNet: SD1's objective (predict the noise, DDPM's scaled-linear schedule of 1000 steps) on
   the posterior means, with an EMA of its weights; the prompt is dropped to "" 10 % of the time so
   that classifier-free guidance has an unconditional model, and to one of its words another 10 %
   so that prompt dropout (the paper's section 5.4) asks nothing the model never saw.

The text encoder is frozen and never trained (text_encoder.py). Same seeds, same torch and CPU
kind: the same weights; other CPUs may differ in float rounding, so the result is to be judged by
what the model draws (python -m fabric.miniature.demo, python -m fabric.quality), not by a digest.
Time: 66.5 min on both threads of this project's 2-core Intel Xeon, alone (autoencoder 16.2 min,
UNet 50 min). --quick writes to a temporary file unless --out says otherwise, so that a check of
the script never overwrites the committed weights.
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from dataclasses import dataclass

import torch

from ..sampler import alphas_cumprod
from . import shapes
from .model import WEIGHTS, Autoencoder, Miniature, build_unet, load, save, to_pixels
from .text_encoder import TextEncoder


@dataclass(frozen=True)
class Plan:
    images: int = 12_000
    vae_crop_steps: int = 1_500
    vae_full_steps: int = 300
    vae_batch: int = 16
    vae_lr: float = 4e-4
    kl_weight: float = 1e-6
    unet_steps: int = 4_000
    unet_batch: int = 64
    unet_lr: float = 3e-4
    ema: float = 0.999
    seed: int = 20_231_105


QUICK = Plan(images=256, vae_crop_steps=3, vae_full_steps=2, unet_steps=3)
QUICK_OUT = Path(tempfile.gettempdir()) / "fabric-miniature-quick.safetensors"
CHECKPOINT_EVERY = 500


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3)).mean()


def train_autoencoder(plan: Plan, images: torch.Tensor, generator: torch.Generator) -> Autoencoder:
    vae = Autoencoder()
    steps = plan.vae_crop_steps + plan.vae_full_steps
    optimizer = torch.optim.Adam(vae.parameters(), lr=plan.vae_lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    for step in range(steps):
        crop = step < plan.vae_crop_steps
        index = torch.randint(len(images), (plan.vae_batch if crop else plan.vae_batch // 2,), generator=generator)
        x = images[index]
        if crop:
            y0, x0 = torch.randint(0, shapes.SIZE - 32 + 1, (2,), generator=generator).tolist()
            x = x[:, :, y0:y0 + 32, x0:x0 + 32]
        mean, logvar = vae.moments(x)
        z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=generator)
        reconstruction = vae.decode(z)
        rec = (reconstruction - x).abs().mean()
        loss = rec + plan.kl_weight * _kl(mean, logvar)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            _log(f"autoencoder {step + 1}/{steps} ({'crops' if crop else 'whole'}): L1 {rec.item():.4f}")
    return vae.requires_grad_(False).eval()


@torch.no_grad()
def latent_means(vae: Autoencoder, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    return torch.cat([vae.moments(images[i:i + batch])[0] for i in range(0, len(images), batch)])


def training_prompts(factors: list[shapes.Factors], generator: torch.Generator) -> list[str]:
    """Per image: its prompt, or "" (10 %), or the shape's word alone or "a" (5 % each)."""
    draws = torch.rand(len(factors), generator=generator).tolist()
    prompts = []
    for f, u in zip(factors, draws):
        prompts.append("" if u < 0.10 else f.shape if u < 0.15 else "a" if u < 0.20 else f.prompt)
    return prompts


def train_unet(plan: Plan, latents: torch.Tensor, contexts: torch.Tensor, generator: torch.Generator,
               checkpoint=None):
    """The EMA of the UNet's weights; checkpoint(ema, steps_done) is called every CHECKPOINT_EVERY
    steps, so that a run stopped early still leaves usable weights behind."""
    unet = build_unet()
    ema = build_unet().requires_grad_(False)
    ema.load_state_dict(unet.state_dict())
    alphas = alphas_cumprod()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=plan.unet_lr, weight_decay=0.0)
    warmup = 200
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * i / plan.unet_steps)))
    running = None
    for step in range(plan.unet_steps):
        index = torch.randint(len(latents), (plan.unet_batch,), generator=generator)
        z0, context = latents[index], contexts[index]
        t = torch.randint(len(alphas), (plan.unet_batch,), generator=generator)
        a = alphas[t].view(-1, 1, 1, 1)
        noise = torch.randn(z0.shape, generator=generator)
        eps = unet(a.sqrt() * z0 + (1 - a).sqrt() * noise, t, context=context)
        loss = (eps - noise).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters()):
                e.lerp_(p, 1.0 - plan.ema)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 250 == 0 or step == plan.unet_steps - 1:
            _log(f"unet {step + 1}/{plan.unet_steps}: loss {running:.4f}")
        if checkpoint is not None and (step + 1) % CHECKPOINT_EVERY == 0 and step + 1 < plan.unet_steps:
            checkpoint(ema, step + 1)
    return ema.eval()


def train(plan: Plan, out: str | None = None, vae: Autoencoder | None = None) -> Miniature:
    """With out, a checkpoint is written there as the UNet trains; with vae, stage 1 is skipped."""
    begin = time.perf_counter()
    torch.manual_seed(plan.seed)
    generator = torch.Generator().manual_seed(plan.seed)
    _log(f"drawing {plan.images} training images")
    factors, images_u8 = shapes.dataset(plan.images, seed=plan.seed)
    images = to_pixels(images_u8)
    if vae is None:
        vae = train_autoencoder(plan, images, generator)
    vae_s = time.perf_counter() - begin
    means = latent_means(vae, images)
    scale_factor = float(1.0 / means.std())
    _log(f"latent scale factor {scale_factor:.5f}")
    text = TextEncoder()
    prompts = training_prompts(factors, generator)
    variants = sorted(set(prompts))
    table = dict(zip(variants, text(variants)))
    contexts = torch.stack([table[p] for p in prompts])

    def info(unet_steps_done: int) -> dict:
        return {
            "plan": plan.__dict__,
            "unet_steps_done": unet_steps_done,
            "autoencoder_s": round(vae_s),
            "total_s": round(time.perf_counter() - begin),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }

    def checkpoint(ema, steps_done: int) -> None:
        save(Miniature(ema, vae, text, scale_factor, info=info(steps_done)), out)
        _log(f"checkpoint after {steps_done} UNet steps: {out}")

    if out:
        checkpoint(build_unet().requires_grad_(False), 0)  # the autoencoder is kept, for --vae-from
    unet = train_unet(plan, means * scale_factor, contexts, generator, checkpoint if out else None)
    done = info(plan.unet_steps)
    _log(f"trained in {done['total_s'] / 60:.1f} min (autoencoder {vae_s / 60:.1f})")
    return Miniature(unet, vae, text, scale_factor, info=done)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fabric.miniature.train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None,
                        help=f"where to write the weights (default {WEIGHTS}; with --quick, {QUICK_OUT})")
    parser.add_argument("--quick", action="store_true", help="a few steps of each stage: checks the script, trains nothing")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--vae-from", default=None, metavar="PATH",
                        help="take the autoencoder from these miniature weights and train the UNet only")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    vae = load(args.vae_from).vae if args.vae_from else None
    out = args.out or str(QUICK_OUT if args.quick else WEIGHTS)
    miniature = train(QUICK if args.quick else Plan(), out=out, vae=vae)
    save(miniature, out)
    _log(f"wrote {out}")


if __name__ == "__main__":
    main()
