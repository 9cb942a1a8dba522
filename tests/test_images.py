"""fabric/feedback/images.py: decoding feedback images sent as text, safely, and naming them by pixels."""
import base64
import re

import numpy as np
import pytest
from PIL import Image, ImageFile

from fabric.feedback import images
from fabric.errors import FabricInputError
from fabric.feedback.images import decode_image, image_id

from payload_support import b64, data_url, encode, picture, png_claiming

LIMITS = dict(max_pixels=4096 * 4096, max_bytes=32 * 1024 * 1024)


def decode(value, field="img", **kw):
    return decode_image(value, field=field, **{**LIMITS, **kw})


def refused(value, field="img", **kw) -> FabricInputError:
    with pytest.raises(FabricInputError) as info:
        decode(value, field=field, **kw)
    assert info.value.field == field
    assert str(info.value) == f"{field}: {info.value.message}"
    return info.value


# -- identity ------------------------------------------------------------------------------------


def test_image_id_is_16_lowercase_hex_and_depends_on_pixels():
    a, b = picture(1), picture(2)
    assert re.fullmatch(r"[0-9a-f]{16}", image_id(a))
    assert image_id(a) == image_id(a.copy())
    assert image_id(a) != image_id(b)


def test_image_id_includes_the_size():
    raw = bytes(range(36))
    assert image_id(Image.frombytes("RGB", (3, 4), raw)) != image_id(Image.frombytes("RGB", (4, 3), raw))


def test_image_id_is_the_same_whatever_format_carried_the_picture():
    src = picture(3)
    want = image_id(src)
    for fmt in ("PNG", "BMP", "WEBP"):
        kw = {"lossless": True} if fmt == "WEBP" else {}
        assert image_id(decode(b64(src, fmt, **kw))) == want, fmt
    assert image_id(decode(data_url(src))) == want
    flat = Image.new("RGB", (5, 4), (10, 20, 30))  # one colour: GIF's palette and JPEG keep it exact
    assert image_id(decode(b64(flat, "GIF"))) == image_id(decode(b64(flat, "JPEG", quality=100))) == image_id(flat)
    # an opaque RGBA picture is the same picture as its RGB
    assert image_id(src.convert("RGBA")) == want


# -- accepted forms ------------------------------------------------------------------------------


def test_decode_returns_a_loaded_rgb_image():
    img = decode(b64(picture(4)))
    assert img.mode == "RGB" and img.size == (8, 6)
    assert img.tobytes() == picture(4).tobytes()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: "data:image/png;base64," + s,
        lambda s: "DATA:image/PNG;BASE64," + s,
        lambda s: "data:image/png;name=cat.png;base64," + s,
        lambda s: "  " + "\n".join(s[i : i + 76] for i in range(0, len(s), 76)) + "\n",
        lambda s: s.rstrip("="),
        lambda s: s.replace("+", "-").replace("/", "_"),
    ],
    ids=["plain", "data-url", "data-url-case", "data-url-params", "wrapped-lines", "no-padding", "urlsafe"],
)
def test_accepted_encodings(wrap):
    src = picture(5, size=(13, 7))
    assert decode(wrap(b64(src))).tobytes() == src.tobytes()


def test_jpeg_base64_starting_with_a_slash_is_not_taken_for_a_path():
    text = b64(picture(6), "JPEG")
    assert text.startswith("/9j/")
    assert decode(text).size == (8, 6)


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (255, 0, 0, 0))      # transparent red -> white
    rgba.putpixel((1, 0), (0, 0, 255, 255))    # opaque blue stays
    out = decode(b64(rgba))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (0, 0, 255)
    la = Image.new("LA", (1, 1), (0, 0))
    assert decode(b64(la)).getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency():
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 0, 255, 0])
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0
    out = decode(b64(pal))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (0, 255, 0)


def test_16_bit_greyscale_is_scaled_not_clipped():
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    out = decode(b64(Image.fromarray(arr)))
    assert [out.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]


def test_exif_orientation_is_applied():
    src = picture(7, size=(8, 4))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = decode(b64(src, "JPEG", exif=exif.tobytes()))
    assert out.size == (4, 8)


def test_first_frame_of_an_animation():
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode(base64.b64encode(data).decode()).getpixel((0, 0)) == (255, 0, 0)


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, 5, 1.5, True, b"abc", [], {}, ["x"]])
def test_refuses_values_that_are_not_text(value):
    assert "base64 string" in refused(value).message


def test_refuses_empty_text():
    assert "empty" in refused("   ").message


@pytest.mark.parametrize(
    "value",
    [
        "/etc/passwd",
        "/home/user/cat",
        "./cat.png",
        "../../secret.png",
        "~/Pictures/cat.png",
        "cat.png",
        "C:\\Users\\me\\cat.png",
        "C:/Users/me/cat.png",
        "\\\\server\\share\\cat.png",
        "http://example.com/cat.png",
        "https://example.com/cat.png",
        "HTTPS://EXAMPLE.COM/cat",
        "file:///etc/passwd",
        "file:/etc/passwd",
        "ftp://example.com/cat.png",
        "s3://bucket/cat.png",
    ],
)
def test_refuses_paths_and_urls_without_reading_them(value, monkeypatch):
    def no_io(*a, **k):
        raise AssertionError("a path or URL was opened")

    monkeypatch.setattr("builtins.open", no_io)
    err = refused(value)
    assert err.message == "paths and URLs are never read: send the image as base64"


@pytest.mark.parametrize(
    "value, words",
    [
        ("data:text/plain;base64,QUJD", "must carry an image"),
        ("data:image/png,rawbytes", "base64-encoded"),
        ("data:image/png;base64", "must look like"),
    ],
)
def test_refuses_bad_data_urls(value, words):
    assert words in refused(value).message


@pytest.mark.parametrize("value", ["!!!not base64!!!", "QUJDR", "abc$def", "ab=cd"])
def test_refuses_text_that_is_not_base64(value):
    assert "base64" in refused(value).message


def test_refuses_too_much_base64_before_decoding_it(monkeypatch):
    text = b64(picture(8, size=(64, 64)))

    def must_not_decode(*a, **k):
        raise AssertionError("decoded before the length check")

    monkeypatch.setattr(images, "_b64decode", must_not_decode)
    err = refused(text, max_bytes=len(text) - 1)
    assert f"{len(text)} characters" in err.message and str(len(text) - 1) in err.message


def test_length_limit_counts_the_payload_of_a_data_url():
    text = b64(picture(8))
    assert decode("data:image/png;base64," + text, max_bytes=len(text)).size == (8, 6)


def test_refuses_bytes_that_are_not_an_image():
    assert "not a readable image" in refused(base64.b64encode(b"hello, world" * 10).decode()).message


@pytest.mark.parametrize("fmt", ["TIFF", "PPM", "ICO", "TGA"])
def test_refuses_formats_outside_the_accepted_list(fmt):
    assert "accepted: PNG, JPEG, WebP, GIF, BMP" in refused(b64(picture(9), fmt)).message


def test_refuses_eps_without_running_ghostscript():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    assert "not a readable image" in refused(base64.b64encode(eps).decode()).message


def test_decompression_bomb_is_refused_from_its_header():
    err = refused(b64(png_claiming(50000, 50000)))
    assert "limit" in err.message


def test_pixel_limit_is_checked_on_the_header_before_decoding(monkeypatch):
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(1))
    err = refused(b64(png_claiming(5000, 5000)), max_pixels=1000 * 1000)
    assert "5000x5000 = 25000000 pixels" in err.message and "1000000" in err.message
    assert loads == []


def test_pixel_limit_boundary():
    src = picture(10, size=(10, 10))
    assert decode(b64(src), max_pixels=100).size == (10, 10)
    assert "over the limit of 99" in refused(b64(src), max_pixels=99).message


def test_truncated_png_is_refused():
    data = encode(Image.effect_noise((64, 64), 60).convert("RGB"))
    for cut in (len(data) // 2, len(data) - 12, 20):
        refused(base64.b64encode(data[:cut]).decode())


def test_truncated_png_is_refused_even_when_pillow_is_told_to_load_truncated_images(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = encode(Image.effect_noise((64, 64), 60).convert("RGB"))
    assert "truncated" in refused(base64.b64encode(data[: len(data) // 2]).decode()).message


def test_truncated_jpeg_is_refused():
    data = encode(Image.effect_noise((64, 64), 60).convert("RGB"), "JPEG")
    assert "could not be decoded" in refused(base64.b64encode(data[: len(data) // 2]).decode()).message


def test_corrupt_png_data_is_refused():
    data = bytearray(encode(Image.effect_noise((32, 32), 60).convert("RGB")))
    data[60:80] = b"\0" * 20  # inside IDAT
    refused(base64.b64encode(bytes(data)).decode())


def test_a_huge_string_is_refused_on_its_length_alone(monkeypatch):
    scans = []
    monkeypatch.setattr(images, "_base64_payload", lambda *a: scans.append(1))
    err = refused("A" * 10_000, max_bytes=1000)
    assert "10000 characters" in err.message and scans == []


def test_png_with_trailing_bytes_after_iend_is_accepted():
    src = picture(11)
    data = encode(src) + b"\0trailing junk from some tool" * 3
    assert decode(base64.b64encode(data).decode()).tobytes() == src.tobytes()


def test_rgb_png_with_a_transparent_colour_key():
    src = Image.new("RGB", (2, 1), (10, 20, 30))
    src.putpixel((1, 0), (0, 255, 0))
    out = decode(b64(src, "PNG", transparency=(10, 20, 30)))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (0, 255, 0)
