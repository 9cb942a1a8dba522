"""The script with its host adapter in the A1111 stand-in: what a job says when FABRIC cannot
attach, and where its settings sit."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "webui_standin"))

import harness  # noqa: E402
from modules import shared  # noqa: E402

import fabric.engine  # noqa: E402
from fabric.feedback.settings import INFOTEXT_KEYS  # noqa: E402


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    with harness.started_webui(tmp_path_factory.mktemp("webui")) as ui:
        ui.liked = ui.add_image(1)
        yield ui


@pytest.fixture
def ui(webui):
    webui.reset()
    yield webui
    webui.reset()


def assert_said_once_and_claims_nothing(p):
    assert p.extra_generation_params.get("FABRIC error")
    assert not set(INFOTEXT_KEYS.values()) & set(p.extra_generation_params)
    assert len([c for c in p.comments if "FABRIC" in c]) == 1


def test_the_a1111_adapter_is_the_host_here(ui):
    assert ui.host.NAME == "AUTOMATIC1111"


def test_settings_have_their_own_section_in_a_category_and_need_no_restart(ui):
    labels = {key: info for key, info in shared.opts.data_labels.items() if key.startswith("fabric_")}
    assert {info.section for info in labels.values()} == {("fabric", "FABRIC")}
    assert {info.category_id for info in labels.values()} == {"sd"}
    assert "requires restart" not in labels["fabric_store_dir"].comment_after


def test_an_exception_while_attaching_completes_the_job_and_claims_nothing(ui, monkeypatch):
    def broken(self):
        raise RuntimeError("cannot attach")

    vanilla, _ = ui.vanilla()
    monkeypatch.setattr(fabric.engine.Fabric, "attach", broken)
    out, p = ui.job(ui.args(enabled=True, liked=[ui.liked]))
    assert torch.equal(out.samples, vanilla.samples)
    assert p.extra_generation_params["FABRIC error"] == "RuntimeError"
    assert_said_once_and_claims_nothing(p)


def test_a_model_fabric_cannot_serve_is_said_once_before_the_job(ui, monkeypatch):
    vanilla, _ = ui.vanilla()
    monkeypatch.setattr(ui.host, "self_attention_layers", lambda unet: [])
    out, p = ui.job(ui.args(enabled=True, liked=[ui.liked]))
    assert torch.equal(out.samples, vanilla.samples)
    assert p.extra_generation_params["FABRIC error"] == "CannotServe"
    assert_said_once_and_claims_nothing(p)
    assert ui.host._current.job is None


# -- the note whenever FABRIC did not apply (issue: the caller is told, in the response itself) ----

NOTE = "FABRIC note"
HIRES = dict(width=64, height=64, enable_hr=True, hr_scale=2.0, steps=4, hr_second_pass_steps=4, denoising_strength=0.3)


def test_a_job_where_feedback_reached_every_pass_has_no_note(ui):
    _, p = ui.job(ui.args(enabled=True, liked=[ui.liked], end=1.0))
    assert NOTE not in p.extra_generation_params and "FABRIC liked" in p.extra_generation_params


def test_an_image_deleted_while_the_job_waited_is_noted_in_the_infotext(ui):
    """The edge checked the id; the image went before the job ran: vanilla, and the note says why."""
    doomed = ui.add_image(91)
    args = ui.args(enabled=True, liked=[doomed])
    ui.store.delete(doomed)  # another client's DELETE /fabric/v1/images/{id}
    vanilla, _ = ui.vanilla()
    out, p = ui.job(args)
    assert torch.equal(out.samples, vanilla.samples)
    note = out.extra_generation_params[NOTE]
    assert note.startswith("off for this job: liked[0]") and doomed in note
    assert not set(INFOTEXT_KEYS.values()) & set(p.extra_generation_params)


def test_no_step_in_the_window_keeps_the_settings_and_says_nothing_applied(ui):
    vanilla, _ = ui.vanilla(steps=3)
    out, p = ui.job(ui.args(enabled=True, liked=[ui.liked], start=0.6, end=0.9), steps=3)  # progress 0, 0.5, 1
    assert torch.equal(out.samples, vanilla.samples)
    assert out.extra_generation_params[NOTE] == (
        "no step fell in the feedback window (start 0.6, end 0.9): no feedback was applied")
    assert p.extra_generation_params["FABRIC start"] == "0.6"  # pasting it back restores the settings
    assert "FABRIC error" not in p.extra_generation_params


def test_a_fault_mid_job_says_in_how_many_steps_feedback_applied(ui, monkeypatch):
    from fabric.engine import unet_hooks
    from fabric.engine.layers import self_attention_layers

    calls = []
    real = unet_hooks.attend_with_references
    layers = len(self_attention_layers(ui.model.model.diffusion_model))

    def fails_in_the_third_call(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2 * layers:  # one call an attn1 layer: the third UNet call fails
            raise RuntimeError("mid-job")
        return real(*args, **kwargs)

    monkeypatch.setattr(unet_hooks, "attend_with_references", fails_in_the_third_call)
    out, p = ui.job(ui.args(enabled=True, liked=[ui.liked], end=1.0), steps=5)
    # the third call's first attn1 layers had feedback before the fault: it counts as applied
    assert out.extra_generation_params[NOTE] == (
        "applied in 3 of 5 model calls, then turned off for the rest of this job by RuntimeError: mid-job")
    assert p.extra_generation_params["FABRIC error"] == "RuntimeError"
    assert "FABRIC liked" in p.extra_generation_params  # it did apply, in part


def test_a_hires_pass_outside_the_window_is_noted(ui):
    _, p = ui.job(ui.args(enabled=True, liked=[ui.liked], end=0.5, hires=True), **HIRES)
    assert p.extra_generation_params[NOTE] == (
        "applied in 2 of 8 model calls: none in the hires pass (outside the feedback window)")
    _, p = ui.job(ui.args(enabled=True, liked=[ui.liked], end=0.5, hires=False), **HIRES)
    assert NOTE not in p.extra_generation_params  # not asked for in the hires pass: nothing to say
