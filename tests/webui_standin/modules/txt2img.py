"""modules/txt2img.py: only the existence of `txt2img_upscale` matters to the script — the ✨
button under the txt2img gallery exists from v1.8 (webui-host-api.md §1.4 "txt2img_upscale", §6
"Output panel": the last button of the row is `txt2img_upscale` in v1.8+)."""


def txt2img_upscale(id_task, request, gallery, gallery_index, generation_info, *args):
    raise NotImplementedError("the stand-in does not run the ✨ upscale job")
