"""fabric.ui.gradio_compat and the panel with the values gradio 4.40 (Forge) delivers.

CI has gradio 3.41 only, so the gradio 4 branches run here on plain data shaped as gradio 4.40
hands it to event handlers (source: the gradio 4.40.0 wheel):

* ``Gallery.preprocess`` (components/gallery.py:160-180): a list of ``(image, caption)`` tuples,
  the image converted by ``convert_to_type`` (:240-247) after the gallery's ``type``: the path
  string ("filepath"), ``PIL.Image.open(path)`` ("pil", the webui's output gallery in Forge), or
  ``np.array`` of it ("numpy"); paths lie in gradio's cache (upload) folder.
* ``File.preprocess`` (components/file.py:124-158), ``type="filepath"``: a list of
  ``NamedString`` (a ``str`` subclass) paths in the upload folder.
* a raw file payload: ``FileData`` (data_classes.py), fields ``path``, ``orig_name``, ``url``...
"""

import json
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio", reason="gradio is not installed")

from PIL import Image  # noqa: E402

from fabric.ui import gradio_compat  # noqa: E402
from fabric.ui.gradio_compat import file_name, gradio_file_dirs, image_source, js_event, upload_box  # noqa: E402
from fabric.feedback.images import image_id  # noqa: E402
from fabric.ui.panel import FabricPanel  # noqa: E402
from fabric.feedback.settings import Limits  # noqa: E402
from fabric.feedback.store import FeedbackStore  # noqa: E402


class NamedString(str):
    """gradio 4.40's utils.NamedString: a str that also has ``.name``."""

    def __init__(self, *args):
        super().__init__()
        self.name = str(self)


class FileData:
    """The fields of gradio 4.40's data_classes.FileData that the panel may meet."""

    def __init__(self, path, orig_name=None):
        self.path, self.orig_name, self.url, self.size, self.mime_type = path, orig_name, None, None, None


@pytest.fixture
def gradio4(monkeypatch):
    monkeypatch.setattr(gradio_compat, "GRADIO_4", True)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """gradio's upload folder (GRADIO_TEMP_DIR), where gradio 4 keeps every file it hands over."""
    folder = tmp_path / "gradio"
    folder.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    return folder


def _png(folder, name, color, size=(20, 16)):
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return str(path)


def test_js_keyword_follows_the_version(gradio4, monkeypatch):
    assert js_event("() => 1") == {"js": "() => 1"}
    monkeypatch.setattr(gradio_compat, "GRADIO_4", False)
    assert js_event("() => 1") == {"_js": "() => 1"}


def test_upload_box_is_gradios_own_file_in_gradio_4(gradio4):
    with gr.Blocks():
        box = upload_box(file_count="multiple")
    assert type(box) is gr.File


def test_upload_box_in_gradio_3_hands_over_raw_entries():
    with gr.Blocks():
        box = upload_box(file_count="multiple")
    raw = [{"name": "/etc/passwd", "data": None, "is_file": True}]
    assert box.preprocess(raw) is raw and box.get_block_name() == "file"


def test_image_source_reads_every_shape(tmp_path):
    path = _png(tmp_path, "a.png", (1, 2, 3))
    opened = Image.open(path)
    pixels = np.zeros((4, 5, 3), dtype=np.uint8)
    shapes = {
        # gradio 3.41
        "3: entry": ({"name": path, "data": None, "is_file": True, "orig_name": "x.png"}, {"path": path, "name": "x.png"}),
        "3: [entry, caption]": ([{"name": path, "data": None, "is_file": True}, "c"], {"path": path, "name": path}),
        "3: data url": ({"name": None, "data": "data:image/png;base64,AA", "is_file": False},
                        {"data": "data:image/png;base64,AA", "name": "image"}),
        "3: path": (path, {"path": path, "name": path}),
        # gradio 4.40
        "4: (filepath, caption)": ((path, None), {"path": path, "name": path}),
        "4: (pil from a file, caption)": ((opened, "c"), {"path": path, "name": path}),
        "4: NamedString": (NamedString(path), {"path": path, "name": path}),
        "4: FileData": (FileData(path, "orig.png"), {"path": path, "name": "orig.png"}),
        "4: FileData dict": ({"path": path, "orig_name": "o.png", "meta": {"_type": "gradio.FileData"}},
                             {"path": path, "name": "o.png"}),
        "junk": (42, {}),
        "junk dict": ({"name": 5}, {}),
    }
    for label, (item, expected) in shapes.items():
        assert image_source(item) == expected, label
    # Pixels that came from no file stay an image (checked by the panel): numpy, or a new PIL image.
    from_numpy = image_source((pixels, None))
    assert isinstance(from_numpy, Image.Image) and from_numpy.size == (5, 4)
    fresh = Image.new("RGB", (3, 3))
    assert image_source((fresh, None)) is fresh
    assert file_name(FileData(path, "orig.png")) == "orig.png" and file_name(NamedString(path)) == path


def test_gradio_file_dirs(gradio4, monkeypatch):
    class Component:
        GRADIO_CACHE = "/tmp/gradio-cache"
        DEFAULT_TEMP_DIR = "/tmp/gradio-3"

    assert gradio_file_dirs([Component(), object()]) == ["/tmp/gradio-cache"]
    monkeypatch.setattr(gradio_compat, "GRADIO_4", False)
    assert gradio_file_dirs([Component()]) == ["/tmp/gradio-3"]


# -- the panel's handlers with gradio 4.40 values ----------------------------------------------------


@pytest.fixture
def panel(tmp_path, cache):
    store = FeedbackStore(tmp_path / "store")
    with gr.Blocks():
        panel = FabricPanel("txt2img", get_store=lambda: store, get_limits=lambda: Limits(max_pixels=4096))
    panel.store = store
    return panel


def test_like_from_forges_output_gallery(panel, cache, tmp_path):
    """Forge's output gallery has type="pil": PIL images opened from gradio's cache."""
    grid = _png(cache / "h1", "grid.png", (9, 9, 9), size=(40, 32))
    first = _png(cache / "h2", "first.png", (200, 10, 10))
    second = _png(cache / "h3", "second.png", (10, 200, 10))
    gallery = [(Image.open(p), None) for p in (grid, first, second)]
    info = json.dumps({"index_of_first_image": 1})
    state, status, enabled = panel.feedback_from_output("liked", gallery, {"index": 2, "info": info}, [])
    assert state == [{"id": image_id(Image.open(second)), "weight": 1.0}] and enabled["value"] is True
    _, status, _ = panel.feedback_from_output("liked", gallery, {"index": 0, "info": info}, state)
    assert "grid" in status
    # Batch size 1, nothing selected: the only image.
    state, _, _ = panel.feedback_from_output("disliked", [(Image.open(first), None)], {"index": -1, "info": ""}, [])
    assert len(state) == 1
    # A file outside gradio's folders is refused even when gradio would hand it over opened.
    outside = _png(tmp_path / "elsewhere", "x.png", (1, 1, 1))
    _, status, _ = panel.feedback_from_output("liked", [(Image.open(outside), None)], {"index": 0}, [])
    assert "not one this page served" in status


def test_like_from_numpy_and_filepath_galleries(panel, cache):
    pixels = np.full((16, 16, 3), 77, dtype=np.uint8)
    state, _, _ = panel.feedback_from_output("liked", [(pixels, "caption")], {"index": 0}, [])
    assert state[0]["id"] == image_id(Image.fromarray(pixels))
    path = _png(cache / "h4", "p.png", (3, 30, 90))
    state, _, _ = panel.feedback_from_output("liked", [(path, None)], {"index": 0}, state)
    assert len(state) == 2
    # The pixel limit holds for pixels that came from no file.
    _, status, enabled = panel.feedback_from_output("liked", [(np.zeros((100, 100, 3), np.uint8), None)], {"index": 0}, [])
    assert "over the limit" in status and "value" not in enabled


def test_upload_in_gradio_4(panel, cache, tmp_path):
    a = NamedString(_png(cache / "u1", "red.png", (250, 0, 0)))
    b = NamedString(_png(cache / "u2", "blue.png", (0, 0, 250)))
    junk = cache / "u3" / "notes.txt"
    junk.parent.mkdir()
    junk.write_text("x")
    outside = NamedString(_png(tmp_path / "elsewhere", "secret.png", (1, 1, 1)))
    box, state, status, enabled = panel.upload("disliked", [a, b, NamedString(str(junk)), outside], [])
    assert box is None and len(state) == 2 and enabled["value"] is True
    assert "Added 2 images to the disliked set (2)" in status
    assert "notes.txt" in status and "secret.png" in status
    # A single file (file_count="single") and FileData objects too.
    _, state, status, _ = panel.upload("liked", FileData(str(a), "red.png"), [])
    assert len(state) == 1 and "Added 1 image" in status
