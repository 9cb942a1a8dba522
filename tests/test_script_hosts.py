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
