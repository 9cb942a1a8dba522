"""modules/images.py (v1.10.1): `resize_image(resize_mode, im, width, height, upscaler_name=None)`.

Facts encoded: mode 0 stretches; mode 1 "crop and resize" scales to cover width x height keeping
the aspect ratio (src_w/src_h computed with integer division exactly as the webui does) and pastes
it centred on a new RGB image, cropping the excess; mode 2 fits and fills. The resize itself is
PIL LANCZOS when no upscaler applies (`opts.upscaler_for_img2img` None here; with an upscaler the
webui would upscale first, then LANCZOS to the exact size). The script encodes each feedback image
with mode 1 at the generation size (webui-host-api.md §5 "PIL image -> latent").
"""
from PIL import Image

from modules.shared import opts

LANCZOS = Image.Resampling.LANCZOS


def resize_image(resize_mode, im, width, height, upscaler_name=None):
    upscaler_name = upscaler_name or opts.upscaler_for_img2img

    def resize(im, w, h):
        if upscaler_name is None or upscaler_name == "None" or im.mode == "L":
            return im.resize((w, h), resample=LANCZOS)
        raise NotImplementedError("the stand-in has no upscalers")

    if resize_mode == 0:
        return resize(im, width, height)

    ratio = width / height
    src_ratio = im.width / im.height
    if resize_mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = resize(im, src_w, src_h)
        res = Image.new("RGB", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return res

    src_w = width if ratio < src_ratio else im.width * height // im.height
    src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = resize(im, src_w, src_h)
    res = Image.new("RGB", (width, height))
    res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        fill_height = height // 2 - src_h // 2
        if fill_height > 0:
            res.paste(resized.resize((width, fill_height), box=(0, 0, width, 0)), box=(0, 0))
            res.paste(resized.resize((width, fill_height), box=(0, resized.height, width, resized.height)), box=(0, fill_height + src_h))
    elif ratio > src_ratio:
        fill_width = width // 2 - src_w // 2
        if fill_width > 0:
            res.paste(resized.resize((fill_width, height), box=(0, 0, 0, height)), box=(0, 0))
            res.paste(resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height)), box=(fill_width + src_w, 0))
    return res
