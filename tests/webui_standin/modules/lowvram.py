"""modules/lowvram.py (v1.10.1): `--medvram`, simulated on the CPU.

Facts encoded (webui-host-api.md §3.1 "--medvram caveat"): `setup_for_low_vram(sd_model,
use_medvram=True)` keeps one big module "in the GPU" at a time (`module_in_gpu`): a forward
pre-hook `send_me_to_gpu` on **`sd_model.model`** (the wrapper, not `diffusion_model`), on the text
encoder, and instance `encode`/`decode` wrappers on `first_stage_model`, each moving the previous
module back to the CPU. So the UNet's weights are in place only during a call that went through
`sd_model.model`; a VAE or text-encoder call in the middle of a UNet call evicts the UNet.
`sd_model.lowvram` tells whether it is on. (--lowvram's per-block hooks are not simulated.)
Stand-in addition: the `.to()` moves are no-ops on the CPU, so a pre-hook on the UNet's
`time_embed` (run first by every UNet forward, FABRIC's reference pass included) raises the
device-mismatch error a GPU would give whenever `module_in_gpu` is not `sd_model.model`.
"""
module_in_gpu = None
moves: list[str] = []


class WeightsNotOnDevice(RuntimeError):
    pass


def setup_for_low_vram(sd_model, use_medvram=True):
    if not use_medvram:
        raise NotImplementedError("only --medvram is simulated")
    if getattr(sd_model, "lowvram", False):
        return
    sd_model.lowvram = True
    names = {}

    def send_me_to_gpu(module, _):
        global module_in_gpu
        if module_in_gpu is module:
            return
        module_in_gpu = module
        moves.append(names.get(id(module), type(module).__name__))

    first_stage_model = sd_model.first_stage_model
    first_stage_model_encode = first_stage_model.encode
    first_stage_model_decode = first_stage_model.decode

    def first_stage_model_encode_wrap(x):
        send_me_to_gpu(first_stage_model, None)
        return first_stage_model_encode(x)

    def first_stage_model_decode_wrap(z):
        send_me_to_gpu(first_stage_model, None)
        return first_stage_model_decode(z)

    text_encoder = sd_model.text_encoder if sd_model.is_sdxl else sd_model.cond_stage_model
    names.update({id(first_stage_model): "first_stage_model", id(text_encoder): "text encoder", id(sd_model.model): "model"})
    text_encoder.register_forward_pre_hook(send_me_to_gpu)
    first_stage_model.register_forward_pre_hook(send_me_to_gpu)
    first_stage_model.encode = first_stage_model_encode_wrap
    first_stage_model.decode = first_stage_model_decode_wrap
    sd_model.model.register_forward_pre_hook(send_me_to_gpu)

    def weights_in_place(module, _):
        if module_in_gpu is not sd_model.model:
            held = names.get(id(module_in_gpu), type(module_in_gpu).__name__)
            raise WeightsNotOnDevice(f"Expected all tensors to be on the same device: the UNet is on the CPU ({held} is on the GPU)")

    sd_model.model.diffusion_model.time_embed.register_forward_pre_hook(weights_in_place)


def is_enabled(sd_model):
    return getattr(sd_model, "lowvram", False)
