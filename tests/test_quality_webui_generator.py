"""What `python -m fabric.quality --webui URL` sends: the API's own parser reads it as the engine's job.

Its requests to a real webui are run by tests/e2e/test_e2e_miniature.py.
"""
import base64
import io
import json

import httpx
import numpy as np
import pytest

from fabric.engine import Schedule
from fabric.feedback.settings import parse_script_args
from fabric.feedback.store import FeedbackStore
from fabric.miniature.demo import demo_references
from fabric.miniature.generate import Feedback
from fabric.quality.webui_generator import WebuiGenerator, _consecutive_runs, fabric_args
from PIL import Image


def test_seeds_go_in_requests_of_consecutive_runs():
    assert _consecutive_runs(list(range(40)), 16) == [list(range(16)), list(range(16, 32)), list(range(32, 40))]
    assert _consecutive_runs([3, 4, 5, 9, 10, 2], 16) == [[3, 4, 5], [9, 10], [2]]
    assert _consecutive_runs([], 16) == []


@pytest.mark.parametrize("feedback, dropout", [
    (Feedback(*demo_references()), 0.0),
    (Feedback(*demo_references(), Schedule(strength=0.5, start=0.25, end=1.0, min_strength=0.1, neg_scale=0.2),
              liked_weights=[1.0, 0.25], token_budget=16), 0.3),
])
def test_the_named_arguments_are_the_jobs_settings(tmp_path, feedback, dropout):
    settings = parse_script_args([fabric_args(feedback, dropout)], store=FeedbackStore(tmp_path))
    s = feedback.schedule
    assert settings.enabled
    assert (settings.strength, settings.start, settings.end, settings.min_strength, settings.neg_scale) == (
        s.strength, s.start, s.end, s.min_strength, s.neg_scale)
    assert (settings.token_budget, settings.prompt_dropout) == (feedback.token_budget, dropout)
    assert [i.weight for i in settings.liked] == (feedback.liked_weights or [1.0] * len(feedback.liked))
    assert len(settings.disliked) == len(feedback.disliked)
    store = FeedbackStore(tmp_path)
    for item, image in zip((*settings.liked, *settings.disliked), (*feedback.liked, *feedback.disliked)):
        assert np.array_equal(np.asarray(store.get(item.id).convert("RGB")), image)  # PNG is lossless


def answering_webui(options: dict, sent: list[dict]) -> httpx.MockTransport:
    """A webui's options and txt2img answers, as its API gives them (one grey image a seed)."""
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(png, format="PNG")
    image = base64.b64encode(png.getvalue()).decode()

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/sdapi/v1/options":
            return httpx.Response(200, json=options)
        body = json.loads(request.content)
        sent.append(body)
        return httpx.Response(200, json={"images": [image] * body["batch_size"],
                                         "info": json.dumps({"infotexts": ["a circle"] * body["batch_size"]})})
    return httpx.MockTransport(answer)


@pytest.mark.parametrize("options, overrides", [
    ({"sd_model_checkpoint": "fabric-miniature", "emphasis": "Original"}, {"emphasis": "No norm"}),
    ({"sd_model_checkpoint": "fabric-miniature"}, {}),  # a webui before 1.8 has no Emphasis setting
])
def test_every_request_sets_emphasis_without_the_mean_rescaling_where_the_webui_has_it(options, overrides):
    sent: list[dict] = []
    generate = WebuiGenerator("http://webui", transport=answering_webui(options, sent))
    images = generate("a circle", [0, 1, 2], prompt_dropout=0.3)
    assert images.shape == (3, 64, 64, 3)
    assert [b["seed"] for b in sent] == [0, 1, 2]  # prompt dropout without feedback: a request a seed
    assert all(b["override_settings"] == overrides for b in sent)
