"""The miniature model: its weights as the trainer writes them, its regenerated text encoder, the webui's keys."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from fabric.miniature import model as miniature_model
from fabric.miniature.model import CHECK_PROMPTS, EMBEDDINGS_KEY, UNET_PREFIX, VAE_PREFIX
from fabric.miniature.text_encoder import TextEncoder, tokenize


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Weights from the trainer's --quick plan: a few steps, so the shape and format are the
    trainer's own, and the tests need not wait for a real training run."""
    from fabric.miniature import train

    path = tmp_path_factory.mktemp("miniature") / "miniature.safetensors"
    train.main(["--quick", "--out", str(path)])
    return path


def test_a_quick_run_without_out_leaves_the_committed_weights_alone(tmp_path, monkeypatch):
    from fabric.miniature import train

    before = miniature_model.WEIGHTS.stat().st_mtime_ns, miniature_model.WEIGHTS.stat().st_size
    monkeypatch.setattr(train, "QUICK_OUT", tmp_path / "quick.safetensors")
    train.main(["--quick"])
    assert (tmp_path / "quick.safetensors").stat().st_size > 0
    assert (miniature_model.WEIGHTS.stat().st_mtime_ns, miniature_model.WEIGHTS.stat().st_size) == before


def test_saved_weights_are_small_and_keyed_as_a_latent_diffusion_checkpoint(weights):
    assert weights.stat().st_size <= 20 * 1024 * 1024
    state = load_file(str(weights))
    assert all(k.startswith((UNET_PREFIX, VAE_PREFIX)) or k == EMBEDDINGS_KEY for k in state)
    assert f"{UNET_PREFIX}input_blocks.0.0.weight" in state
    assert f"{VAE_PREFIX}encoder.conv_in.weight" in state and f"{VAE_PREFIX}post_quant_conv.weight" in state
    miniature = miniature_model.load(weights)
    assert miniature.scale_factor > 0 and miniature.info["plan"]["unet_steps"] == 3


def test_tokens_are_clips_ids_padded_as_sd1_in_the_webui():
    # The ids transformers' CLIPTokenizer (openai/clip-vit-large-patch14) gives these prompts.
    assert tokenize("a circle")[:5] == [49406, 320, 7117, 49407, 49407]
    assert tokenize("A  Triangle")[:4] == [49406, 320, 14615, 49407]
    assert tokenize("")[:3] == [49406, 49407, 49407] and len(tokenize("a square")) == 77


def test_an_unknown_word_is_refused_by_name():
    with pytest.raises(ValueError, match="'hexagon'"):
        tokenize("a hexagon")


def test_the_text_encoder_computes_what_the_webuis_clip_class_computes(text_encoder):
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")
    theirs = transformers.CLIPTextModel(config).eval()
    prefix = "cond_stage_model.transformer."
    theirs.load_state_dict({k[len(prefix):]: v for k, v in text_encoder.webui_state_dict().items()})
    prompts = ["a circle", "", "square"]
    with torch.no_grad():
        expected = theirs(input_ids=torch.tensor([tokenize(p) for p in prompts])).last_hidden_state
    torch.testing.assert_close(text_encoder(prompts), expected, atol=1e-4, rtol=0)


def test_the_text_encoder_is_regenerated_from_its_seeds(text_encoder, weights):
    stored = load_file(str(weights))[EMBEDDINGS_KEY].float()
    assert (text_encoder(list(CHECK_PROMPTS)) - stored).abs().max() < miniature_model.EMBEDDING_TOLERANCE


def test_weights_trained_on_other_embeddings_are_refused(tmp_path, weights):
    state = load_file(str(weights))
    state[EMBEDDINGS_KEY] = (state[EMBEDDINGS_KEY].float() + 0.1).half()
    path = tmp_path / "other.safetensors"
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        save_file(state, str(path), metadata=f.metadata())
    with pytest.raises(RuntimeError, match="other embeddings than the miniature was trained on"):
        miniature_model.load(path)


def test_missing_weights_say_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="fabric.miniature.train"):
        miniature_model.load(tmp_path / "none.safetensors")


def test_the_trainer_can_reuse_an_autoencoder_and_train_the_unet_alone(weights, tmp_path):
    from fabric.miniature import train

    out = tmp_path / "unet-only.safetensors"
    train.main(["--quick", "--out", str(out), "--vae-from", str(weights)])
    before, after = load_file(str(weights)), load_file(str(out))
    vae_keys = [k for k in before if k.startswith(VAE_PREFIX)]
    assert vae_keys and all(torch.equal(before[k], after[k]) for k in vae_keys)
    assert miniature_model.load(out).info["unet_steps_done"] == 3


def test_the_demo_writes_its_picture_and_counts(weights, tmp_path, capsys):
    from fabric.miniature import demo

    out = tmp_path / "demo.png"
    demo.main(["--weights", str(weights), "--seeds", "2", "--out", str(out)])
    from PIL import Image

    assert Image.open(out).size[1] > 5 * 128  # five rows of 128-pixel tiles: 2 references, 3 outputs
    printed = capsys.readouterr().out
    assert "red on white" in printed and f"wrote {out}" in printed


def test_the_quality_benchmark_ends_with_a_json_line(weights, capsys):
    import json

    from fabric.quality.__main__ import main

    main(["--weights", str(weights), "--seeds", "2", "--users", "1", "--rounds", "2", "--only", "rounds"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rounds = result["rounds_defaults"]
    assert {"rounds_prompt_dropout_0.3", "rounds_neg_scale_0.2", "rounds_liked_only"} <= set(result)
    assert [r["round"] for r in rounds] == [1, 2]
    # round 1 has no feedback yet: FABRIC's batch is vanilla's
    assert rounds[0]["FABRIC_mean"] == rounds[0]["vanilla_mean"]


def test_the_webui_export_has_the_text_encoder_and_a_yaml_of_the_sizes(weights, tmp_path):
    from omegaconf import OmegaConf

    from fabric.miniature.export import export

    checkpoint, yaml = export(tmp_path, weights=weights)
    state = load_file(str(checkpoint))
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in state
    assert state["cond_stage_model.transformer.text_model.embeddings.position_ids"].dtype == torch.int64
    config = OmegaConf.load(yaml).model
    assert config.target == "ldm.models.diffusion.ddpm.LatentDiffusion"
    assert config.params.unet_config.params.model_channels == 64
    assert config.params.scale_factor == pytest.approx(miniature_model.load(weights).scale_factor)
