"""Helpers shared by the store, settings, API and fuzz tests: small pictures as bytes and base64."""
from __future__ import annotations

import base64
import io
import os
import struct
import zlib
from pathlib import Path

from PIL import Image


def picture(seed: int = 0, size=(8, 6), mode: str = "RGB") -> Image.Image:
    """A small picture whose pixels depend on seed."""
    w, h = size
    data = bytes((seed * 37 + i * 11) % 256 for i in range(w * h * len(mode)))
    return Image.frombytes(mode, size, data)


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kw)
    return buffer.getvalue()


def b64(data: bytes | Image.Image, fmt: str = "PNG", **kw) -> str:
    if isinstance(data, Image.Image):
        data = encode(data, fmt, **kw)
    return base64.b64encode(data).decode("ascii")


def data_url(img: Image.Image, fmt: str = "PNG") -> str:
    return f"data:image/{fmt.lower()};base64," + b64(img, fmt)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG file whose header claims width x height RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes), temp files included; not the store's
    empty lock file, which holds no data."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if path == Path(root) / ".lock":
                continue
            out[str(path.relative_to(root))] = path.read_bytes()
    return out


def temp_files(root: Path) -> list[str]:
    return [name for name in tree(root) if Path(name).name.startswith(".tmp-")]


def noise(size=(64, 64), seed: int = 0) -> Image.Image:
    """An RGB picture of random pixels: it does not compress, so its PNG is about w*h*3 bytes."""
    import random

    rng = random.Random(seed)
    return Image.frombytes("RGB", size, bytes(rng.getrandbits(8) for _ in range(size[0] * size[1] * 3)))
