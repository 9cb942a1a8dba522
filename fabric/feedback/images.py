"""Safe decoding of feedback images sent as text, and their identity.

An image arrives as a plain base64 string or a ``data:image/...;base64,`` URL.  Nothing else is
ever read: a string that looks like a file path or a URL is refused, never opened or fetched.
Sizes are checked before the work they bound: the length of the text before base64 decoding, the
width and height from the image header before the pixels are decompressed.

:func:`image_id` names an image by its pixels, so the same picture has the same id whichever
file format carried it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps

from ..errors import FabricInputError

__all__ = ["ACCEPTED_FORMATS", "decode_image", "image_id", "to_rgb", "ID_PATTERN"]

#: Formats Pillow may open.  A fixed list keeps Pillow's rarer plugins (EPS runs Ghostscript,
#: and others have a longer record of parser bugs) away from untrusted bytes.  Pillow opens
#: camera JPEGs that carry a second picture (MPO) through its JPEG opener.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")

#: An image id: 16 lowercase hex digits.
ID_PATTERN = re.compile(r"[0-9a-f]{16}")

_DATA_URL = re.compile(r"data:([^,;]*)((?:;[^,;]*)*),", re.IGNORECASE | re.DOTALL)
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_OTHER_SCHEME = re.compile(r"(?:file|https?|ftp|s3|gs):", re.IGNORECASE)
_WINDOWS_DRIVE = re.compile(r"[A-Za-z]:[\\/]")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_BASE64_URLSAFE = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_WHITESPACE = re.compile(r"\s+")
_FILE_SUFFIX = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,4}$")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IMAGE_MAGIC = (_PNG_SIGNATURE, b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"RIFF", b"BM")

_MAX_DATA_URL_HEADER = 256
_NEVER_READ = "paths and URLs are never read: send the image as base64"


def decode_image(value: object, *, field: str, max_pixels: int, max_bytes: int) -> Image.Image:
    """Decode a base64 string or ``data:image/...;base64,`` URL into a loaded RGB image.

    ``max_bytes`` bounds the length of the base64 text (checked before decoding), ``max_pixels``
    the width times height read from the image header (checked before the pixels are
    decompressed).  Transparency is composited on white, palettes and 16-bit samples are
    converted, and the EXIF orientation is applied.  Every refusal is a
    :class:`FabricInputError` whose field is ``field``.
    """
    if not isinstance(value, str):
        raise FabricInputError(field, f"an image must be a base64 string, not {_kind(value)}")
    text = value.strip()
    if not text:
        raise FabricInputError(field, "an image must be a base64 string, not an empty string")

    if len(text) > max_bytes + _MAX_DATA_URL_HEADER:  # before any scan of the text
        raise FabricInputError(
            field, f"the image is {len(text)} characters of base64, over the limit of {max_bytes}"
        )
    payload, looks_like_path = _base64_payload(text, field)
    if len(payload) > max_bytes:
        raise FabricInputError(
            field, f"the image is {len(payload)} characters of base64, over the limit of {max_bytes}"
        )
    try:
        data = _b64decode(payload, field)
    except FabricInputError:
        if looks_like_path:
            raise FabricInputError(field, _NEVER_READ) from None
        raise
    if looks_like_path and not data.startswith(_IMAGE_MAGIC):
        raise FabricInputError(field, _NEVER_READ)
    return _open_rgb(data, field=field, max_pixels=max_pixels)


def image_id(img: Image.Image) -> str:
    """16 lowercase hex digits naming the picture: sha256 over its RGB size and pixels."""
    rgb = to_rgb(img)
    digest = hashlib.sha256()
    digest.update(b"fabric-image-v1\0RGB\0%dx%d\0" % rgb.size)
    digest.update(rgb.tobytes())
    return digest.hexdigest()[:16]


def to_rgb(img: Image.Image) -> Image.Image:
    """The image as 8-bit RGB: alpha composited on white, palettes expanded, 16 bits scaled."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode.startswith("I") or mode == "F":
        # 16-bit (and 32-bit integer) greyscale: Pillow's convert("L") clips at 255 instead of
        # scaling, which would turn most 16-bit pictures white.
        arr = np.asarray(img, dtype=np.float64)
        scale = 1.0 if mode == "F" else 257.0
        arr = np.clip(np.rint(arr / scale), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB", "1") and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


# -- internals ---------------------------------------------------------------------------------


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    return type(value).__name__


def _base64_payload(text: str, field: str) -> tuple[str, bool]:
    """The base64 part of ``text`` and whether the text also reads as a file path.

    URLs and non-image data URLs are refused here.  Text that is not base64 and reads as a path
    is refused as a path; text that is both (``/home/me/cat``) is refused as a path later unless
    it decodes to an image.
    """
    if text[:5].lower() == "data:":
        match = _DATA_URL.match(text)
        if not match:
            raise FabricInputError(field, "a data URL must look like data:image/png;base64,...")
        media_type = match.group(1).strip().lower()
        params = [p.strip().lower() for p in match.group(2).split(";") if p.strip()]
        if not media_type.startswith("image/"):
            raise FabricInputError(
                field, f"a data URL must carry an image (data:image/...), not {media_type or 'text'}"
            )
        if "base64" not in params:
            raise FabricInputError(field, "a data URL must be base64-encoded (data:image/...;base64,...)")
        return text[match.end():], False
    if _URL_SCHEME.match(text) or _OTHER_SCHEME.match(text):
        raise FabricInputError(field, _NEVER_READ)
    looks_like_path = len(text) < 4096 and bool(
        text.startswith(("/", "./", "../", "~", "\\"))
        or "\\" in text
        or _WINDOWS_DRIVE.match(text)
        or _FILE_SUFFIX.search(text)
        or text in (".", "..")
    )
    compact = _WHITESPACE.sub("", text)
    if _BASE64.fullmatch(compact) or _BASE64_URLSAFE.fullmatch(compact):
        return text, looks_like_path
    if looks_like_path or "/" in text:
        raise FabricInputError(field, _NEVER_READ)
    raise FabricInputError(field, "not valid base64 (expected a base64 string or a data:image/...;base64, URL)")


def _b64decode(payload: str, field: str) -> bytes:
    compact = _WHITESPACE.sub("", payload)
    if not compact:
        raise FabricInputError(field, "the image data is empty")
    urlsafe = ("-" in compact or "_" in compact) and not ("+" in compact or "/" in compact)
    stripped = compact.rstrip("=")
    if len(stripped) % 4 == 1:
        raise FabricInputError(field, "not valid base64 (wrong length)")
    padded = stripped + "=" * (-len(stripped) % 4)
    try:
        if urlsafe:
            if not _BASE64_URLSAFE.fullmatch(padded):
                raise binascii.Error("bad character")
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise FabricInputError(field, "not valid base64") from None


def _open_rgb(data: bytes, *, field: str, max_pixels: int) -> Image.Image:
    if data.startswith(_PNG_SIGNATURE) and b"IEND" not in data:
        # Checked here rather than left to Pillow: another extension may have set
        # ImageFile.LOAD_TRUNCATED_IMAGES, which makes Pillow pad a cut-off PNG with grey.
        raise FabricInputError(field, "the PNG is truncated (no IEND chunk at its end)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=_formats())
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise FabricInputError(field, f"the image is larger than the limit of {max_pixels} pixels") from None
        except Image.UnidentifiedImageError:
            raise FabricInputError(
                field, "not a readable image (accepted: PNG, JPEG, WebP, GIF, BMP)"
            ) from None
        except Exception as exc:  # Pillow's header parsers raise many kinds
            raise FabricInputError(field, f"not a readable image ({_reason(exc)})") from None

        width, height = img.size
        if width <= 0 or height <= 0:
            raise FabricInputError(field, f"the image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise FabricInputError(
                field,
                f"the image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}",
            )
        try:
            img.load()
            try:
                img = ImageOps.exif_transpose(img)
            except Exception:
                pass  # a malformed EXIF block: keep the picture as stored
            rgb = to_rgb(img)
            if rgb is img:
                rgb = img.copy()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise FabricInputError(field, f"the image is larger than the limit of {max_pixels} pixels") from None
        except Exception as exc:
            raise FabricInputError(field, f"the image could not be decoded ({_reason(exc)})") from None
    if rgb.width * rgb.height > max_pixels:  # a multi-frame format can grow on load
        raise FabricInputError(field, f"the image is over the limit of {max_pixels} pixels")
    rgb.info.clear()
    return rgb


def _formats() -> list[str]:
    Image.init()
    return [name for name in ACCEPTED_FORMATS if name in Image.OPEN]


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]
