"""Writes the miniature as a webui checkpoint: a .safetensors with its .yaml beside it.

    python -m fabric.miniature.export <webui>/models/Stable-diffusion [--name fabric-miniature]

The checkpoint is an ldm LatentDiffusion state dict (the UNet, the autoencoder and SD1's text
encoder, the latter regenerated from its seeds: 123 M parameters the repository does not store).
A1111 reads the .yaml of the same name beside a checkpoint as its config (modules/sd_models_config.py,
find_checkpoint_config_near_filename), so the webui builds the miniature's small UNet and
autoencoder instead of SD1.5's. Select it in the checkpoint list, and generate at 64x64.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .model import UNET_CONFIG, VAE_CONFIG, WEIGHTS, load


def config(scale_factor: float) -> dict:
    """The LatentDiffusion config: SD1's v1-inference.yaml with the miniature's sizes."""
    return {"model": {
        "base_learning_rate": 1.0e-04,
        "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
        "params": {
            "linear_start": 0.00085,
            "linear_end": 0.0120,
            "num_timesteps_cond": 1,
            "log_every_t": 200,
            "timesteps": 1000,
            "first_stage_key": "jpg",
            "cond_stage_key": "txt",
            "image_size": UNET_CONFIG["image_size"],
            "channels": 4,
            "cond_stage_trainable": False,
            "conditioning_key": "crossattn",
            "monitor": "val/loss_simple_ema",
            "scale_factor": scale_factor,
            "use_ema": False,
            "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": UNET_CONFIG},
            "first_stage_config": {
                "target": "ldm.models.autoencoder.AutoencoderKL",
                "params": {"embed_dim": VAE_CONFIG["z_channels"], "monitor": "val/rec_loss", "ddconfig": VAE_CONFIG,
                           "lossconfig": {"target": "torch.nn.Identity"}},
            },
            "cond_stage_config": {"target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder"},
        },
    }}


def export(folder: Path, name: str = "fabric-miniature", weights: Path = WEIGHTS) -> tuple[Path, Path]:
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    miniature = load(weights)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.half().contiguous() for k, v in miniature.state_dict().items()}
    state.update({k: (v if v.dtype == torch.int64 else v.half()).contiguous()
                  for k, v in miniature.text.webui_state_dict().items()})
    checkpoint, yaml = folder / f"{name}.safetensors", folder / f"{name}.yaml"
    save_file(state, str(checkpoint))
    OmegaConf.save(OmegaConf.create(config(miniature.scale_factor)), yaml)
    return checkpoint, yaml


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fabric.miniature.export", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="the webui's models/Stable-diffusion folder")
    parser.add_argument("--name", default="fabric-miniature")
    args = parser.parse_args(argv)
    checkpoint, yaml = export(args.folder, args.name)
    print(f"wrote {checkpoint} ({checkpoint.stat().st_size / 2**20:.0f} MB) and {yaml}")


if __name__ == "__main__":
    main()
