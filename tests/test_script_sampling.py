"""scripts/fabric_script.py driven through the real ldm UNet by the stand-in webui.

The stand-in (tests/webui_standin/modules) reproduces the webui v1.10.1 sampling path: processing
(hook order, ImageRNG, hires pass), the samplers (k-diffusion Euler/Heun, DDIM), CFGDenoiser's batch
layout and UNet call patterns, the CFG callbacks, model swaps and the class-wide attention
optimisation. Every test runs whole txt2img jobs (16x16 latents, a small random UNet) and compares
latents exactly where the claim is byte-identity.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "webui_standin"))

import harness  # noqa: E402
from harness import Recorder, is_clean  # noqa: E402
from modules import errors, images, processing, prompt_parser, script_callbacks, sd_hijack, shared  # noqa: E402
from modules import sd_samplers_common  # noqa: E402
from modules.hypernetworks import hypernetwork  # noqa: E402

import fabric  # noqa: E402
from fabric import DISLIKED, LIKED  # noqa: E402

ALL_STEPS = dict(start=0.0, end=1.0)  # feedback on every step: every denoiser call needs the sets
LONG_PROMPT = " ".join(f"word{i}" for i in range(80))  # 2 chunks (154 tokens) vs a 77-token negative


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    with harness.started_webui(tmp_path_factory.mktemp("webui")) as ui:
        ui.images = {name: ui.add_image(seed) for seed, name in enumerate(["a", "b", "c", "d"], start=1)}
        yield ui


@pytest.fixture
def ui(webui):
    webui.reset()
    webui.host._latent_caches.clear()
    webui.expect_reports = False
    yield webui
    reports = list(errors.reported)
    webui.reset()
    if not webui.expect_reports:
        assert not reports, f"the webui reported errors: {reports}"


def liked_disliked(ui, **settings):
    return ui.args(enabled=True, liked=[ui.images["a"]], disliked=[ui.images["b"]], **settings)


def loaded_unets():
    from modules import sd_models

    return [m.model.diffusion_model for m in sd_models.model_data.loaded_sd_models]


def assert_all_clean():
    for unet in loaded_unets():
        assert is_clean(unet)


# -- on, off and identity -----------------------------------------------------------------------


def test_the_ui_has_one_control_per_setting_and_its_defaults_mean_off(ui):
    """args_from/args_to come from ui()'s controls (built in the harness); the API's default args
    are their values, which every job gets for a request that does not mention FABRIC."""
    assert ui.script.name == "fabric"
    assert ui.script.args_to - ui.script.args_from == len(ui.settings.POSITIONAL_ORDER)
    defaults = ui.default_script_args[ui.script.args_from:ui.script.args_to]
    settings = ui.settings.parse_script_args(defaults, store=ui.store, from_hook=True)
    assert settings == ui.settings.FabricSettings()


def test_fabric_changes_the_result(ui, monkeypatch):
    recorder = Recorder(monkeypatch)
    vanilla, _ = ui.vanilla()
    on, p = ui.job(liked_disliked(ui))
    assert (on.samples - vanilla.samples).abs().max() > 0.1
    assert any((a != b).any() for a, b in zip(on.images, vanilla.images))
    assert recorder.passes(LIKED) and recorder.passes(DISLIKED)
    assert "FABRIC error" not in p.extra_generation_params and not p.comments
    assert_all_clean()


@pytest.mark.parametrize("case", ["not mentioned (the UI defaults)", "default settings", "only enabled sent",
                                  "all weights 0", "image weights 0"])
def test_off_empty_and_zero_weights_are_byte_identical_to_no_extension(ui, monkeypatch, case):
    a, b = ui.images["a"], ui.images["b"]
    args = {
        "not mentioned (the UI defaults)": None,
        "default settings": ui.args(),
        "only enabled sent": [True],
        "all weights 0": ui.args(enabled=True, liked=[a], disliked=[b], strength=0.0, min_strength=0.0),
        "image weights 0": ui.args(enabled=True, liked=[{"id": a, "weight": 0}], disliked=[{"id": b, "weight": 0}]),
    }[case]
    recorder = Recorder(monkeypatch)
    vanilla, _ = ui.vanilla()
    out, p = ui.job(args)
    assert torch.equal(out.samples, vanilla.samples)
    assert all((x == y).all() for x, y in zip(out.images, vanilla.images))
    assert not recorder.passes()
    if case in ("not mentioned (the UI defaults)", "default settings", "only enabled sent"):
        assert not any(k.startswith("FABRIC") for k in p.extra_generation_params)
    assert_all_clean()


def test_jobs_after_a_fabric_job_and_after_a_failed_one_are_identical(ui):
    before, _ = ui.job()
    with_fabric, _ = ui.job(liked_disliked(ui))
    after, _ = ui.job()
    assert torch.equal(after.samples, before.samples)

    ui.model.fail_at_call = 3  # the UNet raises in the middle of sampling: postprocess never runs
    with pytest.raises(harness.fake_models.StandinFault):
        ui.job(liked_disliked(ui))
    assert fabric.attached(ui.model.model.diffusion_model) is not None  # left behind by the failure
    ui.model.fail_at_call = None
    ui.model.unet_calls.clear()

    after_failure, _ = ui.job()
    assert torch.equal(after_failure.samples, before.samples)
    assert_all_clean()
    again, _ = ui.job(liked_disliked(ui))
    assert torch.equal(again.samples, with_fabric.samples)
    assert_all_clean()


def test_same_seed_and_feedback_give_the_same_result_in_any_order(ui):
    a, b, c = ui.images["a"], ui.images["b"], ui.images["c"]
    first, _ = ui.job(ui.args(enabled=True, liked=[a, c], disliked=[b]))
    second, _ = ui.job(ui.args(enabled=True, liked=[a, c], disliked=[b]))
    reordered, _ = ui.job(ui.args(enabled=True, liked=[c, a], disliked=[b]))
    assert torch.equal(first.samples, second.samples)
    assert torch.equal(first.samples, reordered.samples)


# How far a batch's image k may be from its seed's job alone, as a multiple of the distance that
# vanilla has on the same machine. Rounding that differs with the batch shape grows over the steps
# in both; FABRIC's extra arithmetic (reference keys, its own attention) may grow it a little more.
BATCH_ROUNDING_FACTOR = 4
_vanilla_batch_deviation: dict[str, float] = {}


def batch_deviation(ui, args) -> tuple[float, bool]:
    """The largest distance between image k of a batch (size 2, count 2, seed 100) and the job of
    its own seed at batch size 1, over the latents; and whether the decoded images are equal."""
    batch, _ = ui.job(args, seed=100, batch_size=2, n_iter=2)
    assert batch.samples.shape[0] == 4
    worst, same_images = 0.0, True
    for k in range(4):
        alone, _ = ui.job(args, seed=100 + k)
        worst = max(worst, float((batch.samples[k] - alone.samples[0]).abs().max()))
        same_images &= bool((batch.images[k] == alone.images[0]).all())
    return worst, same_images


def vanilla_batch_deviation(ui, model) -> float:
    """Vanilla's own batch-versus-alone distance on this machine. The stand-in's per-image noise
    (ImageRNG) makes the inputs equal; whether the arithmetic is depends on the CPU: some give each
    row the same result in a batch of 2 as alone, others (seen: an AMD EPYC with AVX512 kernels)
    block the matrix products differently per batch size, ~2e-4 of latents of magnitude ~60."""
    if model not in _vanilla_batch_deviation:
        ui.reset(model)
        _vanilla_batch_deviation[model], _ = batch_deviation(ui, ui.args())
    return _vanilla_batch_deviation[model]


@pytest.mark.parametrize("model", ["sd15", "sdxl"])
@pytest.mark.parametrize("reference_rows", ["In separate UNet calls", "Auto"])
def test_image_k_of_a_batch_is_what_its_seed_gives_alone(ui, model, reference_rows):
    """Batch size 2, batch count 2: each image is what the job of its own seed gives at batch
    size 1, as exactly as vanilla's is on this machine.

    With separate reference calls, FABRIC's per-reference noise and reference passes do not depend
    on the batch: bit for bit where vanilla is, else within BATCH_ROUNDING_FACTOR times vanilla's
    own distance. In the generation's own call (Auto on a CPU) the reference rows make the call
    6 rows at batch size 2 and 4 alone, which these kernels may block differently even where
    vanilla is exact: to float rounding (1e-3 of latents of magnitude ~60), or within the factor
    of vanilla's distance where that is larger. (Not on inpainting models: there the webui's own
    image conditioning is VAE-sampled with the global RNG, which ImageRNG seeds with the batch's
    last seed, so even vanilla batches differ; see the inpainting test.)
    """
    vanilla = vanilla_batch_deviation(ui, model)
    ui.reset(model)
    shared.opts.fabric_reference_rows = reference_rows
    deviation, same_images = batch_deviation(ui, liked_disliked(ui))
    print(f"{model}, {reference_rows}: FABRIC {deviation:.2e}, vanilla {vanilla:.2e} (batch vs alone)")
    bound = BATCH_ROUNDING_FACTOR * vanilla
    if reference_rows == "Auto":
        bound = max(bound, 1e-3)
    elif vanilla == 0:
        assert deviation == 0 and same_images
    assert deviation <= bound


def test_prompt_dropout_is_per_image_by_seed_and_keeps_the_typed_prompt(ui, monkeypatch):
    """Each image's conditioning comes from its own dropped prompt (seeded by its seed), so image k
    of a batch is still what its seed gives alone; the infotext keeps the prompt as typed."""
    from fabric.engine.prompt_dropout import drop_words

    prompt = "a red fox jumping over the lazy brown dog in deep white snow"
    vanilla = vanilla_batch_deviation(ui, "sd15")
    ui.reset("sd15")
    shared.opts.fabric_reference_rows = "In separate UNet calls"
    args = liked_disliked(ui, prompt_dropout=0.5)
    seen = []  # the prompts each batch's conditioning is computed from
    original = processing.StableDiffusionProcessingTxt2Img.setup_conds

    def setup_conds(p):
        seen.append(list(p.prompts))
        return original(p)

    monkeypatch.setattr(processing.StableDiffusionProcessingTxt2Img, "setup_conds", setup_conds)
    out, p = ui.job(args, prompt=prompt, seed=100, batch_size=2, n_iter=2)
    alone = [ui.job(args, prompt=prompt, seed=100 + k)[0] for k in range(4)]
    want = [drop_words(prompt, 0.5, 100 + k) for k in range(4)]
    assert seen[:2] == [want[:2], want[2:]] and len(set(want)) == 4 and prompt not in want
    assert p.all_prompts == [prompt] * 4  # what the infotext shows
    assert p.extra_generation_params["FABRIC prompt dropout"] == "0.5"
    deviation = max(float((out.samples[k] - alone[k].samples[0]).abs().max()) for k in range(4))
    assert deviation <= BATCH_ROUNDING_FACTOR * vanilla


def test_prompt_dropout_off_leaves_the_prompt_and_the_infotext_alone(ui):
    _, p = ui.job(liked_disliked(ui), prompt="a red fox in the snow")
    assert p.prompts == ["a red fox in the snow"] and "FABRIC prompt dropout" not in p.extra_generation_params


# -- CFG call patterns --------------------------------------------------------------------------

# (batch_cond_uncond, long prompt) -> the rows of each UNet call for prompts
# ["<p> AND snow:0.6", "a cat"] (3 cond rows: image 0 twice, image 1 once; 2 uncond rows)
PATTERNS = {
    "one call": (True, False, [5]),
    "chunks of batch_size (a chunk mixes cond and uncond)": (False, False, [2, 2, 1]),
    "different token lengths: cond, then uncond": (True, True, [3, 2]),
    "different token lengths, chunked": (False, True, [2, 1, 2]),
}


@pytest.mark.parametrize("pattern,model", [*((pattern, "sd15") for pattern in PATTERNS),
                                           ("chunks of batch_size (a chunk mixes cond and uncond)", "sdxl"),
                                           ("different token lengths, chunked", "sdxl")])
def test_cond_rows_get_liked_and_uncond_rows_disliked_in_every_call_pattern(ui, monkeypatch, pattern, model):
    """Exact set independence, so with the references in UNet calls of their own: in the
    generation's call they change its batch size, and with it the rounding of every row."""
    ui.reset(model)
    shared.opts.fabric_reference_rows = "In separate UNet calls"
    batch_cond_uncond, long_prompt, call_rows = PATTERNS[pattern]
    shared.opts.batch_cond_uncond = batch_cond_uncond
    first = LONG_PROMPT if long_prompt else "a red fox"
    job = dict(prompt=[f"{first} AND snow:0.6", "a cat"], batch_size=2, steps=3)
    recorder = Recorder(monkeypatch)

    x_out = {}

    def first_call_outputs(name):
        def record(params):
            x_out.setdefault(name, params.x.clone())
        return record

    a, b = ui.images["a"], ui.images["b"]
    runs = {
        "both": ui.args(enabled=True, liked=[a], disliked=[b], **ALL_STEPS),
        "liked only": ui.args(enabled=True, liked=[a], **ALL_STEPS),
        "disliked only": ui.args(enabled=True, disliked=[b], **ALL_STEPS),
    }
    runs["vanilla"] = ui.args()
    for name, args in runs.items():
        record = first_call_outputs(name)
        script_callbacks.on_cfg_denoised(record)
        ui.job(args, **job)
        script_callbacks.remove_callbacks_for_function(record)

    # the stand-in made the calls the pattern says, and FABRIC named every row by the layout
    both_entries = recorder.entries[:3]
    for entry in both_entries:
        assert entry["rows"] == 5
        assert [len(roles) for roles in entry["calls"]] == call_rows
        assert sum(entry["calls"], []) == [LIKED] * 3 + [DISLIKED] * 2

    # observable: at the first denoiser call (same x in every run) the cond rows' outputs depend
    # only on the liked set and the uncond rows' only on the disliked set
    cond, uncond = slice(0, 3), slice(3, 5)
    assert torch.equal(x_out["both"][cond], x_out["liked only"][cond])
    assert torch.equal(x_out["both"][uncond], x_out["disliked only"][uncond])
    assert torch.equal(x_out["liked only"][uncond], x_out["vanilla"][uncond])
    assert torch.equal(x_out["disliked only"][cond], x_out["vanilla"][cond])
    assert not torch.allclose(x_out["both"][cond], x_out["vanilla"][cond])
    assert not torch.allclose(x_out["both"][uncond], x_out["vanilla"][uncond])


@pytest.mark.parametrize("pattern", PATTERNS)
def test_references_in_the_generations_call_give_what_separate_calls_give(ui, monkeypatch, pattern):
    """Auto on a CPU runs the references inside the generation's UNet calls where it can: the
    same result as separate calls to float rounding, in every call pattern. A prompt longer than
    the empty prompt has a longer context, so its calls fall back to separate calls."""
    batch_cond_uncond, long_prompt, _ = PATTERNS[pattern]
    first = LONG_PROMPT if long_prompt else "a red fox"
    job = dict(prompt=[f"{first} AND snow:0.6", "a cat"], batch_size=2, steps=3)
    args = liked_disliked(ui, **ALL_STEPS)
    engines = []
    attach = fabric.engine.Fabric.attach
    monkeypatch.setattr(fabric.engine.Fabric, "attach", lambda self: engines.append(self) or attach(self))
    samples, counts = {}, {}
    for mode in ("In separate UNet calls", "Auto"):
        ui.reset()
        shared.opts.batch_cond_uncond = batch_cond_uncond
        shared.opts.fabric_reference_rows = mode
        engines.clear()
        out, _ = ui.job(args, **job)
        samples[mode] = out.samples
        counts[mode] = (sum(e.fused_calls for e in engines), sum(e.reference_calls for e in engines))
    assert counts["In separate UNet calls"][0] == 0
    fused, separate = counts["Auto"]
    assert fused > 0 and (separate > 0) == long_prompt
    torch.testing.assert_close(samples["Auto"], samples["In separate UNet calls"], rtol=1e-3, atol=1e-3)
    assert not torch.equal(samples["Auto"], ui.vanilla(**job)[0].samples)


@pytest.mark.parametrize("mode", ["NGMS on odd steps", "NGMS all steps", "Skip Early CFG"])
def test_steps_without_uncond_rows_run_no_disliked_reference_pass(ui, monkeypatch, mode):
    steps = 6
    s_min_uncond = None
    if mode == "Skip Early CFG":
        shared.opts.skip_early_cond = 0.5
    else:
        s_min_uncond = 100.0  # above every sigma: the NGMS condition holds on every step it is checked
        shared.opts.s_min_uncond_all = mode == "NGMS all steps"
    recorder = Recorder(monkeypatch)
    vanilla, _ = ui.vanilla(steps=steps, s_min_uncond=s_min_uncond)
    ui.model.unet_calls.clear()
    out, p = ui.job(liked_disliked(ui, **ALL_STEPS), steps=steps, s_min_uncond=s_min_uncond)
    assert not torch.allclose(out.samples, vanilla.samples)

    skipped = {
        "NGMS on odd steps": {1, 3, 5},
        "NGMS all steps": set(range(steps)),
        "Skip Early CFG": {0, 1, 2, 3},  # step / total_steps <= 0.5
    }[mode]
    assert [e["step"] for e in recorder.entries] == list(range(steps))
    for entry, call in zip(recorder.entries, ui.model.unet_calls):
        sets = [ps["set"] for ps in entry["passes"]]
        if entry["step"] in skipped:
            assert call["rows"] == 1 and entry["calls"] == [[LIKED]]
            assert sets == [LIKED]
        else:
            assert call["rows"] == 2 and entry["calls"] == [[LIKED, DISLIKED]]
            assert sets == [LIKED, DISLIKED]
    key = "Skip Early CFG" if mode == "Skip Early CFG" else "NGMS"
    assert key in p.extra_generation_params


def test_second_order_sampler(ui, monkeypatch):
    steps = 5
    vanilla, _ = ui.vanilla(sampler_name="Heun", steps=steps)
    off, _ = ui.job(sampler_name="Heun", steps=steps)
    assert torch.equal(off.samples, vanilla.samples)
    recorder = Recorder(monkeypatch)
    first, _ = ui.job(liked_disliked(ui, **ALL_STEPS), sampler_name="Heun", steps=steps)
    second, _ = ui.job(liked_disliked(ui, **ALL_STEPS), sampler_name="Heun", steps=steps)
    assert torch.equal(first.samples, second.samples)
    assert not torch.allclose(first.samples, vanilla.samples)
    entries = recorder.entries[: 2 * steps - 1]  # two denoiser calls per step but the last
    assert [e["step"] for e in entries] == list(range(2 * steps - 1))
    assert all([ps["set"] for ps in e["passes"]] == [LIKED, DISLIKED] for e in entries)
    ts = [e["passes"][0]["t"] for e in entries]  # the second call of step i is at sigma[i + 1]
    assert ts[1::2] == ts[2::2] and len(set(ts)) == steps
    assert any(t != round(t) for t in ts)  # k-diffusion's fractional t (999 / 4 apart)


def test_ddim_integer_timesteps(ui, monkeypatch):
    vanilla, _ = ui.vanilla(sampler_name="DDIM", steps=5)
    ui.model.unet_calls.clear()
    off, _ = ui.job(sampler_name="DDIM", steps=5)
    assert torch.equal(off.samples, vanilla.samples)
    ts = torch.cat([call["t"] for call in ui.model.unet_calls])
    assert torch.equal(ts, ts.round()) and ts.max() > 500
    recorder = Recorder(monkeypatch)
    out, _ = ui.job(liked_disliked(ui, **ALL_STEPS), sampler_name="DDIM", steps=5)
    assert not torch.allclose(out.samples, vanilla.samples)
    passes = recorder.passes()
    assert passes and all(ps["t"] == round(ps["t"]) for ps in passes)
    assert sorted({ps["t"] for ps in passes}, reverse=True) == [801.0, 601.0, 401.0, 201.0]


# -- hires fix, model swaps -----------------------------------------------------------------------

HIRES = dict(width=64, height=64, enable_hr=True, hr_scale=2.0, steps=4, hr_second_pass_steps=4, denoising_strength=0.6)


def spy_encodes(ui, monkeypatch):
    encodes = []
    original = ui.host._encode_reference

    def encode(image, image_id, height, width):
        encodes.append((image_id, height, width))
        return original(image, image_id, height, width)

    monkeypatch.setattr(ui.host, "_encode_reference", encode)
    return encodes


def test_hires_pass_gets_no_feedback_by_default(ui, monkeypatch):
    recorder = Recorder(monkeypatch)
    encodes = spy_encodes(ui, monkeypatch)
    vanilla, _ = ui.vanilla(**HIRES)
    out, _ = ui.job(liked_disliked(ui, **ALL_STEPS), **HIRES)
    assert out.samples.shape[-2:] == (16, 16)
    assert not torch.allclose(out.samples, vanilla.samples)  # the first pass had feedback
    assert recorder.passes(hr=False) and not recorder.passes(hr=True)
    assert all(e["calls"] == [None] for e in recorder.entries if e["hr"])
    assert {(h, w) for _, h, w in encodes} == {(8, 8)}
    assert_all_clean()


def test_hires_pass_with_hires_on_reencodes_the_references_at_the_hires_size(ui, monkeypatch):
    recorder = Recorder(monkeypatch)
    encodes = spy_encodes(ui, monkeypatch)
    off, _ = ui.job(liked_disliked(ui, **ALL_STEPS), **HIRES)
    on, p = ui.job(liked_disliked(ui, hires=True, **ALL_STEPS), **HIRES)
    assert not torch.allclose(on.samples, off.samples)
    assert recorder.passes(hr=True)
    a, b = ui.images["a"], ui.images["b"]
    assert sorted(set(encodes)) == sorted({(i, s, s) for i in (a, b) for s in (8, 16)})
    (cache,) = ui.host._latent_caches.values()
    assert {key for key in cache._entries} == {(i, s, s) for i in (a, b) for s in (8, 16)}
    assert p.extra_generation_params["FABRIC hires"] == "True"
    assert_all_clean()


def test_refiner_of_another_config_swaps_the_model_mid_job(ui, monkeypatch):
    recorder = Recorder(monkeypatch)
    base_unet = ui.model.model.diffusion_model
    clean_after_swap = []

    def check_old_unet(params):
        if shared.sd_model.model.diffusion_model is not base_unet:
            clean_after_swap.append(is_clean(base_unet))

    script_callbacks.on_cfg_denoiser(check_old_unet)
    refiner = dict(refiner_checkpoint_info=harness.checkpoint("sd15-refiner"), refiner_switch_at=0.5, steps=6)
    out, p = ui.job(liked_disliked(ui, **ALL_STEPS), **refiner)
    refiner_unet = ui.model.model.diffusion_model
    assert refiner_unet is not base_unet and p.extra_generation_params["Refiner"] == "sd15-refiner"
    units = [e["unet"] for e in recorder.entries]
    assert units[0] is base_unet and units[-1] is refiner_unet
    for entry in recorder.entries:
        assert entry["passes"] and all(ps["unet"] is entry["unet"] for ps in entry["passes"])
    assert clean_after_swap and all(clean_after_swap)
    assert is_clean(base_unet) and is_clean(refiner_unet)

    ui.reset()
    vanilla, _ = ui.vanilla(**refiner)
    assert not torch.allclose(out.samples, vanilla.samples)


def test_refiner_of_the_same_config_reloads_weights_into_the_same_model(ui, monkeypatch):
    """The webui loads a same-config checkpoint into the loaded model object (sd_models.
    reload_model_weights): the UNet object stays, its weights, text encoder and VAE change. The
    reference pass must then use the new model's empty prompt and the new VAE's latents."""
    recorder = Recorder(monkeypatch)
    encodes = spy_encodes(ui, monkeypatch)
    base = ui.model
    empty_before = base.get_learned_conditioning([""]).clone()
    refiner = dict(refiner_checkpoint_info=harness.checkpoint("sd15-other"), refiner_switch_at=0.5, steps=6)
    ui.job(liked_disliked(ui, **ALL_STEPS), **refiner)
    assert ui.model is base and base.sd_checkpoint_info.title == "sd15-other"
    empty_after = base.get_learned_conditioning([""])
    assert not torch.allclose(empty_before, empty_after)
    last = recorder.entries[-1]["passes"][0]["kwargs"]["context"]
    assert torch.equal(last, empty_after)
    assert len(encodes) == 4  # both references, with each checkpoint's VAE
    assert is_clean(base.model.diffusion_model)


# -- global state ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["sd15", "sd15-inpainting", "sdxl"])
def test_the_global_torch_rng_is_not_consumed(ui, model):
    ui.reset(model)
    gray = torch.full((1, 3, 64, 64), 0.5)
    state = torch.get_rng_state()
    sd_samplers_common.images_tensor_to_samples(gray, 0, ui.model)
    assert not torch.equal(torch.get_rng_state(), state)  # the stand-in VAE samples globally

    torch.manual_seed(99)
    ui.vanilla(seed=5)
    vanilla_state = torch.get_rng_state()
    torch.manual_seed(99)
    ui.job(liked_disliked(ui), seed=5)  # the references are encoded during this job
    assert torch.equal(torch.get_rng_state(), vanilla_state)


def test_infotext_carries_every_setting_and_the_image_ids(ui):
    a, b, c = ui.images["a"], ui.images["b"], ui.images["c"]
    settings = dict(enabled=True, liked=[{"id": a, "weight": 1.5}, b], disliked=[c], strength=0.6, start=0.1,
                    end=0.7, min_strength=0.05, neg_scale=0.4, hires=True, token_budget=64, prompt_dropout=0.25)
    processed, p = ui.job(ui.args(**settings))
    fabric_keys = {k: v for k, v in p.extra_generation_params.items() if k.startswith("FABRIC")}
    assert set(fabric_keys) == set(ui.settings.INFOTEXT_KEYS.values())
    assert fabric_keys["FABRIC liked"] == f"{a}:1.5,{b}" and fabric_keys["FABRIC disliked"] == c
    restored = ui.settings.settings_from_infotext(fabric_keys)
    assert restored == {**settings, "liked": [{"id": a, "weight": 1.5}, {"id": b, "weight": 1.0}],
                        "disliked": [{"id": c, "weight": 1.0}]}
    assert processed.extra_generation_params == p.extra_generation_params


def test_script_unload_and_end_job_leave_nothing_attached(ui):
    for cleanup in (ui.module.end_job, script_callbacks.script_unloaded_callback):
        ui.model.fail_at_call = 2
        with pytest.raises(harness.fake_models.StandinFault):
            ui.job(liked_disliked(ui))
        ui.model.fail_at_call = None
        assert not is_clean(ui.model.model.diffusion_model)
        cleanup()
        assert_all_clean()
        assert ui.host._current.job is None


class CountingSdp(sd_hijack.sd_hijack_optimizations.SdOptimizationSdp):
    """An optimisation that counts its calls on attn1 modules, then computes as "sdp"."""

    name = "counting"
    label = None
    priority = 0
    attn1_calls = 0

    def apply(self):
        def forward(module, x, context=None, mask=None, **kwargs):
            if context is None:
                CountingSdp.attn1_calls += 1
            return sd_hijack.sd_hijack_optimizations.scaled_dot_product_attention_forward(module, x, context, mask, **kwargs)

        sd_hijack.set_attention_forward(forward)


def test_a_class_wide_attention_swap_between_jobs_is_honoured(ui):
    def switch(option):
        shared.opts.cross_attention_optimization = option
        sd_hijack.model_hijack.redo_hijack(shared.sd_model)  # what changing the setting runs

    script_callbacks.on_list_optimizers(lambda res: res.append(CountingSdp()))
    sd_hijack.optimizers.clear()
    switch("sdp")
    sdp, _ = ui.job(liked_disliked(ui, **ALL_STEPS))
    switch("None")
    plain, _ = ui.job(liked_disliked(ui, **ALL_STEPS))
    switch("counting")
    CountingSdp.attn1_calls = 0
    counted, _ = ui.job(liked_disliked(ui, **ALL_STEPS))
    assert CountingSdp.attn1_calls > 0  # the reference pass records through the live forward
    assert torch.equal(counted.samples, sdp.samples)
    assert not torch.equal(plain.samples, sdp.samples)  # "None" is another computation
    switch("sdp")
    again, _ = ui.job(liked_disliked(ui, **ALL_STEPS))
    assert torch.equal(again.samples, sdp.samples)


def test_hypernetworks_transform_fabric_keys_and_values(ui):
    vanilla, _ = ui.vanilla()
    module_k, module_v = hypernetwork.HypernetworkModule(64, 1), hypernetwork.HypernetworkModule(64, 2)
    shared.loaded_hypernetworks.append(hypernetwork.Hypernetwork("standin", {64: (module_k, module_v)}))
    with_hypernetwork, _ = ui.vanilla()
    assert not torch.allclose(with_hypernetwork.samples, vanilla.samples)
    module_k.seen.clear()
    a, c = ui.images["a"], ui.images["c"]
    ui.job(ui.args(enabled=True, liked=[a, c], **ALL_STEPS))
    # two liked references: their recorded tokens enter attention as one [1, 2 * N, C] sequence,
    # at the 8x8 (N = 64) and 4x4 (N = 16) attention resolutions
    assert (1, 128, 64) in module_k.seen and (1, 32, 64) in module_k.seen
    assert (1, 128, 64) in module_v.seen


# -- other models, broken references ----------------------------------------------------------------


def test_sdxl_style_model(ui, monkeypatch):
    ui.reset("sdxl")
    recorder = Recorder(monkeypatch)
    vanilla, _ = ui.vanilla()
    off, _ = ui.job()
    assert torch.equal(off.samples, vanilla.samples)
    out, _ = ui.job(liked_disliked(ui))
    assert not torch.allclose(out.samples, vanilla.samples)
    passes = recorder.passes()
    assert passes
    kwargs = passes[0]["kwargs"]
    assert set(kwargs) == {"context", "y"} and kwargs["y"].shape == (1, 1)
    empty = ui.model.get_learned_conditioning(prompt_parser.SdConditioning([""], width=128, height=128))
    assert torch.equal(kwargs["context"], empty["crossattn"]) and kwargs["context"].abs().sum() > 0
    assert torch.equal(kwargs["y"], empty["vector"])
    assert_all_clean()


def test_inpainting_unet_takes_the_txt2img_conditioning_with_the_references(ui, monkeypatch):
    ui.reset("sd15-inpainting")
    inputs = []
    original = fabric.engine.Fabric._reference_inputs

    def reference_inputs(self, *args):
        z, *rest = original(self, *args)
        inputs.append(z.clone())
        return (z, *rest)

    monkeypatch.setattr(fabric.engine.Fabric, "_reference_inputs", reference_inputs)
    vanilla, _ = ui.vanilla()
    out, p = ui.job(liked_disliked(ui))
    assert "FABRIC error" not in p.extra_generation_params
    assert not torch.allclose(out.samples, vanilla.samples)
    assert inputs and all(z.shape[1] == 9 for z in inputs)
    assert all(torch.equal(z[:, 4], torch.ones_like(z[:, 4])) for z in inputs)  # the mask channel
    assert all(call["channels"] == 9 for call in ui.model.unet_calls)

    # the references' input does not depend on the batch: the VAE-sampled gray image is encoded
    # from a seed of FABRIC's own, not from the global RNG that ImageRNG seeded with the last seed
    inputs.clear()
    ui.job(liked_disliked(ui), seed=100, batch_size=2)
    in_batch = inputs[0]
    inputs.clear()
    ui.job(liked_disliked(ui), seed=100)
    assert torch.equal(inputs[0], in_batch)


def test_a_missing_or_damaged_image_turns_fabric_off_with_a_note(ui):
    vanilla, _ = ui.vanilla()
    doomed = ui.add_image(77)
    args = ui.args(enabled=True, liked=[doomed], disliked=[ui.images["b"]])
    path = ui.store_dir / "images" / f"{doomed}.png"
    assert path.is_file()
    path.write_bytes(path.read_bytes()[:40])  # damaged
    out, p = ui.job(args)
    assert torch.equal(out.samples, vanilla.samples)
    assert any("FABRIC is off for this job" in c and doomed in c for c in p.comments)
    path.unlink()  # missing
    out, p = ui.job(args)
    assert torch.equal(out.samples, vanilla.samples)
    assert any("FABRIC is off for this job" in c and doomed in c for c in p.comments)


def test_an_image_deleted_after_process_still_applies(ui):
    """process() loads the pictures, so deleting the file during the job changes nothing."""
    gone = ui.add_image(78)
    args = ui.args(enabled=True, liked=[gone])
    intact, _ = ui.job(args)
    ui.host._latent_caches.clear()
    path = ui.store_dir / "images" / f"{gone}.png"

    def delete_on_first_call(params):
        if path.exists():
            path.unlink()

    script_callbacks.on_cfg_denoiser(delete_on_first_call)
    out, p = ui.job(args)
    assert not path.exists()
    assert torch.equal(out.samples, intact.samples) and "FABRIC error" not in p.extra_generation_params


@pytest.mark.parametrize("where", ["first pass", "hires pass"])
def test_a_reference_that_fails_to_encode_mid_job_completes_the_job_with_a_note(ui, monkeypatch, where):
    """The picture is loaded but cannot be encoded (here: the resize raises) at the first size, or
    only at the hires size: the job completes, FABRIC stops for the rest of it, the infotext and
    the comments say so, and the next job is vanilla."""
    fail_width = 64 if where == "first pass" else 128
    original = images.resize_image

    def resize_image(mode, im, width, height, upscaler_name=None):
        if width == fail_width:
            raise OSError("image file is truncated")
        return original(mode, im, width, height, upscaler_name)

    monkeypatch.setattr(images, "resize_image", resize_image)
    job = dict(HIRES)
    vanilla, _ = ui.vanilla(**job)
    out, p = ui.job(liked_disliked(ui, hires=True, **ALL_STEPS), **job)
    assert p.extra_generation_params.get("FABRIC error") == "OSError"
    assert any("FABRIC was turned off" in c for c in p.comments)
    if where == "first pass":
        assert torch.equal(out.samples, vanilla.samples)
    else:
        assert not torch.allclose(out.samples, vanilla.samples)
    assert_all_clean()
    after, _ = ui.job(**job)
    assert torch.equal(after.samples, vanilla.samples)


# -- interruption, --medvram -------------------------------------------------------------------------


def test_an_interrupted_job_completes_and_leaves_nothing_attached(ui):
    """Interrupting raises InterruptedException at the next denoiser call; the sampler returns the
    last latent, the job (and postprocess) completes."""
    def interrupt_after_step_2(params):
        if params.sampling_step >= 2:
            shared.state.interrupt()

    script_callbacks.on_cfg_after_cfg(interrupt_after_step_2)
    ui.job(liked_disliked(ui))
    # state.sampling_step lags one call (the sampler's callback sets it): calls 0-3 of 6 ran
    assert len(ui.model.unet_calls) == 4 and shared.state.interrupted
    assert_all_clean()
    assert ui.host._current.job is None
    script_callbacks.remove_callbacks_for_function(interrupt_after_step_2)
    vanilla, _ = ui.vanilla()
    after, _ = ui.job()
    assert torch.equal(after.samples, vanilla.samples)


@pytest.mark.parametrize("model", ["sd15", "sd15-inpainting", "sdxl"])
def test_medvram_reference_passes_run_with_the_unet_weights_in_place(ui, model):
    """Under --medvram only calls through sd_model.model bring the UNet in; FABRIC encodes the
    references, the empty prompt and the inpainting channels before the UNet call, so the reference
    pass inside it finds the weights in place."""
    from modules import lowvram

    ui.reset(model)
    plain, _ = ui.job(liked_disliked(ui))
    ui.reset(model)
    ui.host._latent_caches.clear()
    lowvram.setup_for_low_vram(ui.model, True)
    with pytest.raises(lowvram.WeightsNotOnDevice):  # the simulation bites: VAE in, UNet out
        ui.model.first_stage_model.encode(torch.zeros(1, 3, 8, 8))
        ui.model.model.diffusion_model(torch.zeros(1, ui.model.model.diffusion_model.in_channels, 8, 8),
                                       torch.zeros(1), context=torch.zeros(1, 77, 32),
                                       **({"y": torch.zeros(1, 1)} if ui.model.is_sdxl else {}))
    lowvram.moves.clear()
    out, p = ui.job(liked_disliked(ui))
    assert "FABRIC error" not in p.extra_generation_params and not p.comments
    assert "first_stage_model" in lowvram.moves and "model" in lowvram.moves
    assert torch.equal(out.samples, plain.samples)
