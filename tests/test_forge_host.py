"""FABRIC's Forge adapter (fabric/hosts/forge.py) on the stand-in of Forge's backend
(tests/forge_standin/: the UnetPatcher clone/patch protocol, the row layout of UNet calls, the
block modifiers and attn1 replace patches of its UNet), around real attention in a small UNet of
Forge's structure. The webui's `modules` are the A1111 stand-in's (the parts FABRIC uses are the
same in Forge)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
for _path in (TESTS / "forge_standin", TESTS / "webui_standin", TESTS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from forge_job import P, FakeForgeModel, sample  # noqa: E402
from reference_only import ReferenceOnly  # noqa: E402

import fabric  # noqa: E402
from fabric.hosts import forge  # noqa: E402
from fabric.hosts.webui import CannotServe, JobReport, encode_reference  # noqa: E402
from fabric.feedback.settings import FabricSettings, FeedbackImage, settings_to_infotext  # noqa: E402
from harness import test_image as picture  # noqa: E402

ALL_STEPS = dict(start=0.0, end=1.0)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    forge.end_job()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    return FakeForgeModel(0)


def images(*seeds):
    return {f"{seed:016x}": picture(seed) for seed in seeds}


def settings(liked=(), disliked=(), **kwargs):
    kwargs = {**ALL_STEPS, **kwargs}
    return FabricSettings(enabled=True, liked=tuple(FeedbackImage(i) for i in liked),
                          disliked=tuple(FeedbackImage(i) for i in disliked), **kwargs)


def same_to_rounding(a, b, relative=1e-5):
    """Equal up to float32 rounding carried through a few sampling steps."""
    return float((a - b).abs().max()) <= relative * float(b.abs().max())


class Fabric:
    """The script's part for one job: start, the process_before_every_sampling hook, finish."""

    def __init__(self, p, job_settings, pictures):
        self.p = p
        self.report = JobReport(p, job_settings)
        forge.start_job(p, job_settings, pictures, self.report)
        self.report.applying()

    def __call__(self, p, **kwargs):
        forge.before_sampling(p, **kwargs)

    def finish(self):
        forge.finish_job(self.p)
        self.report.finish()  # the script's postprocess


def fabric_job(model, job_settings, pictures, *, cfg=7.0, hooks_before=(), hooks_after=(), **kwargs):
    """A whole FABRIC job; FABRIC's on_cfg_denoiser is registered, as register_callbacks does."""
    kwargs.setdefault("denoiser_callbacks", (forge.on_cfg_denoiser,))
    p = P(model, cfg_scale=cfg)
    hook = Fabric(p, job_settings, pictures)
    try:
        return sample(p, (*hooks_before, hook, *hooks_after), **kwargs), p
    finally:
        hook.finish()


def vanilla(model, *, cfg=7.0, hooks=(), **kwargs):
    return sample(P(model, cfg_scale=cfg), hooks, **kwargs)


class Spy:
    """Counts the adapter's reference passes per set and the UNet calls it planned."""

    def __init__(self, monkeypatch):
        self.sets = []
        self.calls = []
        original_states = forge._Job._set_states
        original_plan = forge._Job._plan
        spy = self

        def set_states(job, run, name, t, weight, h):
            spy.sets.append(name)
            return original_states(job, run, name, t, weight, h)

        def plan(job, run, h, options):
            call = original_plan(job, run, h, options)
            spy.calls.append(None if call is None else {n: rows.tolist() for n, rows in call.groups})
            return call

        monkeypatch.setattr(forge._Job, "_set_states", set_states)
        monkeypatch.setattr(forge._Job, "_plan", plan)


# -- the host ------------------------------------------------------------------------------------


def test_forge_is_recognised_by_its_packages(monkeypatch):
    import fabric.hosts

    assert not fabric.hosts._is_forge()  # backend alone (on sys.path here) is not Forge
    monkeypatch.syspath_prepend(str(TESTS / "forge_standin" / "marker"))
    importlib.invalidate_caches()
    assert fabric.hosts._is_forge()


def test_a_model_without_a_discrete_unet_is_refused_before_anything_is_written(model):
    from backend.modules.k_prediction import PredictionFlow

    flow = FakeForgeModel(0)
    flow.forge_objects.unet.model.predictor = PredictionFlow()
    with pytest.raises(CannotServe):
        forge.start_job(P(flow), settings(liked=list(images(1))), images(1), JobReport(P(flow), settings()))

    class NoUnet:
        forge_objects = None

    with pytest.raises(CannotServe):
        forge.start_job(P(NoUnet()), settings(liked=list(images(1))), images(1), JobReport(P(NoUnet()), settings()))
    assert forge._current.job is None


def test_attn1_locations_are_the_keys_forge_gives_replace_patches(model):
    unet = model.forge_objects.unet.model.diffusion_model
    assert forge.attn1_locations(unet) == [("input", 1, 0), ("input", 3, 0), ("middle", 0, 0),
                                           ("output", 0, 0), ("output", 1, 0), ("output", 2, 0), ("output", 3, 0)]


# -- guarantees ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["weights 0", "images weight 0"])
def test_no_work_is_byte_identical_to_vanilla(model, monkeypatch, case):
    pictures = images(1, 2)
    a, b = pictures
    job = {
        "weights 0": settings([a], [b], strength=0.0, min_strength=0.0),
        "images weight 0": FabricSettings(enabled=True, liked=(FeedbackImage(a, 0.0),), disliked=(FeedbackImage(b, 0.0),)),
    }[case]
    spy = Spy(monkeypatch)
    out, _ = fabric_job(model, job, pictures)
    assert torch.equal(out, vanilla(model))
    assert not spy.sets


def test_feedback_changes_the_image_reproducibly_and_the_next_job_is_vanilla(model):
    pictures = images(1, 2)
    a, b = pictures
    before = vanilla(model)
    first, p = fabric_job(model, settings([a], [b]), pictures)
    again, _ = fabric_job(model, settings([a], [b]), pictures)
    assert not torch.allclose(first, before, atol=1e-3)
    assert torch.equal(first, again)
    assert torch.equal(vanilla(model), before)
    assert "FABRIC error" not in p.extra_generation_params and not p.comments
    assert model.forge_objects_after_applying_lora.unet.model_options == {"transformer_options": {}}


def test_forge_injection_is_the_engines(model):
    """The same references, schedule and rows through the A1111 engine attached to the same UNet
    (instance forwards, separate reference passes) give the same sampling, to float rounding."""
    pictures = images(1, 2)
    a, b = pictures
    job = settings([a], [b], strength=0.7, neg_scale=0.6)
    out, _ = fabric_job(model, job, pictures, seeds=(3,))
    kmodel = model.forge_objects_after_applying_lora.unet.model
    refs = {name: [fabric.Reference(i, lambda h, w, i=i: encode_reference(pictures[i], i, h, w, model))]
            for name, i in ((fabric.LIKED, a), (fabric.DISLIKED, b))}
    engine = fabric.Fabric(
        kmodel.diffusion_model, references=refs,
        schedule=fabric.Schedule(strength=0.7, start=0.0, end=1.0, neg_scale=0.6),
        alphas_cumprod=kmodel.predictor.alphas_cumprod,
        reference_kwargs={"context": model.get_learned_conditioning([""])},
        rows=lambda n: [fabric.DISLIKED] * (n // 2) + [fabric.LIKED] * (n // 2),  # uncond rows first in Forge
        fuse_reference_rows=False,
    )
    with engine:
        expected = vanilla(model, seeds=(3,))
    assert engine.reference_passes > 0
    assert same_to_rounding(out, expected)


def test_liked_go_to_cond_rows_and_disliked_to_uncond_rows(model, monkeypatch):
    pictures = images(1, 2)
    a, b = pictures
    spy = Spy(monkeypatch)
    fabric_job(model, settings([a], [b]), pictures, seeds=(1, 2), steps=2)
    # Forge batches [uncond ; cond] for two images: uncond rows 0-1, cond rows 2-3.
    assert spy.calls == [{fabric.LIKED: [2, 3], fabric.DISLIKED: [0, 1]}] * 2


def test_cfg_1_costs_the_disliked_set_nothing(model, monkeypatch):
    pictures = images(1, 2)
    a, b = pictures
    model.encodes = 0
    spy = Spy(monkeypatch)
    out, _ = fabric_job(model, settings([], [b]), pictures, cfg=1.0)
    assert torch.equal(out, vanilla(model, cfg=1.0))
    assert not spy.sets and model.encodes == 0
    liked_only, _ = fabric_job(model, settings([a], [b]), pictures, cfg=1.0)
    assert set(spy.sets) == {fabric.LIKED}
    assert not torch.allclose(liked_only, vanilla(model, cfg=1.0), atol=1e-3)


def test_the_schedule_window_skips_calls_outside_it(model, monkeypatch):
    pictures = images(1)
    spy = Spy(monkeypatch)
    fabric_job(model, settings(list(pictures), start=0.0, end=0.5), pictures, steps=4)
    assert spy.calls[0] is not None and spy.calls[-1] is None


def test_feedback_follows_a_refiner_that_takes_over_mid_pass(model, monkeypatch):
    """The refiner's steps sample with the refiner's own patcher, which no
    process_before_every_sampling saw: on_cfg_denoiser patches a clone of it, with the references
    encoded by the refiner's VAE, and loads it again (sampling_prepare)."""
    from backend.sampling import sampling_function

    pictures = images(1, 2)
    a, b = pictures
    refiner = FakeForgeModel(7)
    job = settings([a], [b])
    follow = dict(refiner=refiner, denoiser_callbacks=[forge.on_cfg_denoiser])
    plain = vanilla(model, **follow)
    spy = Spy(monkeypatch)
    refiner.encodes = 0
    followed, p = fabric_job(model, job, pictures, **follow)
    assert len(spy.calls) == 4 and all(spy.calls), spy.calls  # 2 steps on the base model, 2 on the refiner
    assert refiner.encodes == 2  # one liked and one disliked image, through the refiner's VAE
    prepared = sampling_function.prepared[-1]
    assert prepared is refiner.forge_objects.unet
    assert any(isinstance(m, forge._BlockModifier) for m in prepared.model_options["transformer_options"]["block_modifiers"])
    assert "FABRIC error" not in p.extra_generation_params and not p.comments

    spy.calls.clear()
    base_only, _ = fabric_job(model, job, pictures, refiner=refiner, denoiser_callbacks=())  # nothing follows the swap
    assert len(spy.calls) == 2
    assert not torch.allclose(followed, base_only, atol=1e-4) and not torch.allclose(followed, plain, atol=1e-3)
    assert torch.equal(fabric_job(model, job, pictures, **follow)[0], followed)
    assert torch.equal(vanilla(model, **follow), plain)  # a refiner job after the FABRIC jobs


def test_image_k_of_a_batch_is_its_seed_alone(model):
    pictures = images(1, 2)
    a, b = pictures
    batch, _ = fabric_job(model, settings([a], [b]), pictures, seeds=(5, 6))
    alone, _ = fabric_job(model, settings([a], [b]), pictures, seeds=(6,))
    vanilla_batch, vanilla_alone = vanilla(model, seeds=(5, 6)), vanilla(model, seeds=(6,))
    tolerance = max(1e-5, float((vanilla_batch[1] - vanilla_alone[0]).abs().max()) * 10)
    assert torch.allclose(batch[1], alone[0], atol=tolerance)


def test_calls_split_by_memory_and_and_prompts_get_the_same_rows(model, monkeypatch):
    pictures = images(1, 2)
    a, b = pictures
    whole, _ = fabric_job(model, settings([a], [b]), pictures, extra_conds=1)
    spy = Spy(monkeypatch)
    split, _ = fabric_job(model, settings([a], [b]), pictures, extra_conds=1, max_entries=1)
    assert spy.calls[:3] == [{fabric.DISLIKED: [0]}, {fabric.LIKED: [0]}, {fabric.LIKED: [0]}]
    assert same_to_rounding(whole, split)


def test_sdxl_references_get_the_empty_prompts_vector(monkeypatch):
    xl = FakeForgeModel(3, sdxl=True)
    pictures = images(1, 2)
    a, b = pictures
    out, p = fabric_job(xl, settings([a], [b]), pictures)
    again, _ = fabric_job(xl, settings([a], [b]), pictures)
    assert torch.equal(out, again) and not torch.allclose(out, vanilla(xl), atol=1e-3)
    assert "FABRIC error" not in p.extra_generation_params


def test_token_budget_pools_the_reference_tokens(model):
    pictures = images(1, 2)
    full, _ = fabric_job(model, settings(list(pictures)), pictures)
    pooled, p = fabric_job(model, settings(list(pictures), token_budget=32), pictures)
    assert not torch.equal(full, pooled) and "FABRIC error" not in p.extra_generation_params


# -- other extensions' patches ---------------------------------------------------------------------


@pytest.mark.parametrize("order", ["reference_only first", "FABRIC first"])
def test_beside_reference_only_both_apply_in_either_order(model, order):
    pictures = images(1, 2)
    a, b = pictures
    reference = ReferenceOnly(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(9)))
    hook = reference.process_before_every_sampling
    first = {"hooks_before": (hook,)} if order == "reference_only first" else {"hooks_after": (hook,)}
    both, p = fabric_job(model, settings([a], [b]), pictures, **first)
    fabric_alone, _ = fabric_job(model, settings([a], [b]), pictures)
    reference_alone = vanilla(model, hooks=(hook,))
    assert reference.recorded_passes > 0
    for other in (vanilla(model), fabric_alone, reference_alone):
        assert not torch.allclose(both, other, atol=1e-3)
    other_order = {"hooks_after": (hook,)} if order == "reference_only first" else {"hooks_before": (hook,)}
    swapped, _ = fabric_job(model, settings([a], [b]), pictures, **other_order)
    assert torch.allclose(both, swapped, atol=1e-6)
    assert "FABRIC error" not in p.extra_generation_params


def test_wrapping_a_plain_attention_patch_is_fabric_alone(model):
    """The blend with another attn1 patch is exact when that patch is plain attention."""
    pictures = images(1, 2)
    a, b = pictures

    def plain(p, **kwargs):
        unet = p.sd_model.forge_objects.unet.clone()
        unet.set_model_replace_all(lambda q, k, v, o: forge._forge_attention(q, k, v, o["n_heads"]), "attn1")
        p.sd_model.forge_objects.unet = unet

    wrapped, _ = fabric_job(model, settings([a], [b]), pictures, hooks_before=(plain,))
    alone, _ = fabric_job(model, settings([a], [b]), pictures)
    assert same_to_rounding(wrapped, alone)


def test_a_later_clone_shares_fabrics_patch_objects(model):
    pictures = images(1)
    p = P(model)
    hook = Fabric(p, settings(list(pictures)), pictures)
    model.forge_objects = model.forge_objects_after_applying_lora.shallow_copy()
    hook(p, x=torch.zeros(1, 4, 8, 8))
    ours = model.forge_objects.unet.model_options["transformer_options"]["block_modifiers"][0]
    clone = model.forge_objects.unet.clone()
    assert clone.model_options["transformer_options"]["block_modifiers"][0] is ours
    hook(p, x=torch.zeros(1, 4, 8, 8))  # called twice on one pass (hires): registered once
    assert len(model.forge_objects.unet.model_options["transformer_options"]["block_modifiers"]) == 1
    hook.finish()


# -- faults ------------------------------------------------------------------------------------------


def test_a_fault_in_the_reference_pass_completes_the_job_without_feedback_and_says_so(model, monkeypatch):
    pictures = images(1, 2)
    a, b = pictures

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(forge, "noised_latent", broken)
    out, p = fabric_job(model, settings([a], [b]), pictures)
    assert torch.equal(out, vanilla(model))
    assert p.extra_generation_params == {  # no settings as if applied, and the note says why
        "FABRIC error": "RuntimeError", "FABRIC note": "turned off for the rest of this job by RuntimeError: boom"}
    assert len(p.comments) == 1 and "FABRIC was turned off" in next(iter(p.comments))
    monkeypatch.undo()
    assert torch.equal(vanilla(model), vanilla(model))


def test_a_fault_mid_job_keeps_the_settings_with_a_note(model, monkeypatch):
    pictures = images(1)
    calls = []
    original = forge.attend_with_references

    def fails_later(*args, **kwargs):
        calls.append(1)
        if len(calls) > 7:  # the second UNet call
            raise RuntimeError("late")
        return original(*args, **kwargs)

    monkeypatch.setattr(forge, "attend_with_references", fails_later)
    job = settings(list(pictures))
    _, p = fabric_job(model, job, pictures)
    assert p.extra_generation_params == {
        **settings_to_infotext(job), "FABRIC error": "RuntimeError",
        "FABRIC note": "applied in 1 of 4 model calls, then turned off for the rest of this job by RuntimeError: late"}


def test_no_step_in_the_window_keeps_the_settings_with_a_note(model):
    """img2img at low denoising runs only the schedule's last steps, outside the default window."""
    pictures = images(1)
    job = settings(list(pictures), start=0.0, end=0.8)
    out, p = fabric_job(model, job, pictures, first_step=3)
    assert torch.equal(out, vanilla(model, first_step=3))
    assert p.extra_generation_params == {
        **settings_to_infotext(job),
        "FABRIC note": "no step fell in the feedback window (start 0, end 0.8): no feedback was applied"}


def test_a_job_with_feedback_in_every_call_has_no_note(model):
    pictures = images(1)
    _, p = fabric_job(model, settings(list(pictures)), pictures)
    assert "FABRIC note" not in p.extra_generation_params


def test_a_failed_or_interrupted_job_leaves_nothing_behind(model):
    pictures = images(1, 2)
    before = vanilla(model)
    p = P(model)
    hook = Fabric(p, settings(list(pictures)), pictures)

    class Interrupted(Exception):
        pass

    def interrupt(h, flag, options):
        if options["block"] == ("output", 2):
            raise Interrupted
        return h

    def interrupting(p, **kwargs):
        p.sd_model.forge_objects.unet.add_block_modifier(interrupt)

    with pytest.raises(Interrupted):
        sample(p, (hook, interrupting))
    stale = model.forge_objects.unet  # the clone of the failed pass is still in forge_objects
    forge.end_job()  # what the next job's process() does
    assert torch.equal(vanilla(model), before)
    job = stale.model_options["transformer_options"]["block_modifiers"][0].job
    assert job.closed and len(job.latents) == 0 and job.current is None
