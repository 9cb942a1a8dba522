"""What differs between gradio 3.41 (AUTOMATIC1111's webui) and gradio 4.40 (Forge), in one place.

The panel is written once; everything that depends on the gradio version goes through here:

* the keyword that attaches a JS function to an event (``_js`` in 3.x, ``js`` in 4.x);
* the upload box: gradio 3.41's ``File.preprocess`` copies whatever path the client names, so in
  3.x the panel takes the raw upload entries and checks them itself; gradio 4.40 refuses, before
  any handler runs, a file that is not in its upload folder (``processing_utils.
  async_move_files_to_cache(check_in_upload_folder=True)``, processing_utils.py:449-456, called
  from ``Blocks.preprocess_data``, blocks.py:1640-1643; Forge's copy of it also passes the files
  the webui registered, modules/ui_tempdir.py:71-150) and ``File.preprocess`` hands over paths
  (``NamedString``, components/file.py:124-158), so the plain ``gr.File`` is used there, and the
  panel still checks where each file lies;
* the values a gallery or an upload box delivers to a handler (:func:`image_source`).
"""

from typing import Any, Optional, Union

import gradio as gr
import numpy as np
from PIL import Image

__all__ = ["GRADIO_4", "js_event", "upload_box", "image_source", "file_name", "gradio_file_dirs"]

GRADIO_4 = int(gr.__version__.split(".")[0]) >= 4


def js_event(js: str) -> dict:
    """The keyword argument of an event listener that runs ``js`` in the page first."""
    return {"js": js} if GRADIO_4 else {"_js": js}


class _RawUploadBox(gr.File):
    """gradio 3.x: a ``gr.File`` whose handler gets the raw upload entries
    (``{"name", "data", "is_file", "orig_name"}``), not copies of the files they name."""

    # Forge (gradio 4) writes a .pyi stub beside the source of every component class unless the
    # class has this attribute (modules/gradio_extensions.py); the class is not used there.
    webui_do_not_create_gradio_pyi_thank_you = True

    def preprocess(self, x):
        return x

    def get_block_name(self):
        return "file"


def upload_box(**kwargs) -> gr.File:
    """A multi-file image upload box whose entries :func:`image_source` understands."""
    return gr.File(**kwargs) if GRADIO_4 else _RawUploadBox(**kwargs)


def image_source(item: Any) -> Union[dict, Image.Image]:
    """One output-gallery item or upload entry, as delivered by either gradio, reduced to one of:

    * ``{"path": str, "name": str}``: a file on the server (not yet checked or read);
    * ``{"data": str, "name": str}``: a ``data:`` URL;
    * a ``PIL.Image.Image`` that came from no file (checked for size by the caller);
    * ``{}`` when the item holds no image.

    Shapes, gradio 3.41: ``{"name": path, "data": None | data URL, "is_file": bool,
    "orig_name"?}``, or ``[entry, caption]``, or a path string.  Gradio 4.40: ``Gallery.preprocess``
    gives ``(image, caption)`` tuples whose image is a path, a ``PIL.Image`` opened from a file
    in the cache, or a numpy array, after the gallery's ``type`` (components/gallery.py:160-180,
    240-247); the webui's output gallery in Forge has ``type="pil"`` (modules/ui_common.py:184).
    ``File.preprocess`` gives path strings; a raw payload is ``FileData`` (``path``,
    ``orig_name``) or its dict.
    """
    if isinstance(item, (list, tuple)) and item:
        item = item[0]  # (image, caption)
    if isinstance(item, np.ndarray):
        item = Image.fromarray(item.astype(np.uint8) if item.dtype != np.uint8 else item)
    if isinstance(item, Image.Image):
        # A PIL image gradio opened from a file is read again from that file, through the same
        # checks as any file (format, size, where it lies).
        path = getattr(item, "filename", None)
        return {"path": path, "name": path} if isinstance(path, str) and path else item
    if isinstance(item, str):
        return {"data": item, "name": "image"} if item.startswith("data:") else {"path": item, "name": item}
    if not isinstance(item, dict):
        path, orig = getattr(item, "path", None), getattr(item, "orig_name", None)
        item = {"path": path, "orig_name": orig} if path is not None else {}
    name = item.get("orig_name") or item.get("name") or item.get("path")
    data = item.get("data")
    if isinstance(data, str) and data.startswith("data:") and not item.get("is_file"):
        return {"data": data, "name": name or "image"}
    path = item.get("path") if "path" in item else item.get("name")
    return {"path": path, "name": name or path} if isinstance(path, str) else {}


def gradio_file_dirs(components) -> list:
    """The folders gradio keeps these components' files in (3.x ``DEFAULT_TEMP_DIR``, 4.x
    ``GRADIO_CACHE``, blocks.py:140 and 277-300 in 4.40)."""
    attr = "GRADIO_CACHE" if GRADIO_4 else "DEFAULT_TEMP_DIR"
    return [str(d) for d in (getattr(c, attr, None) for c in components) if d]


def file_name(item: Any) -> Optional[str]:
    """The name to show for an upload entry (its original file name where gradio kept one)."""
    source = image_source(item)
    return source.get("name") if isinstance(source, dict) else None
