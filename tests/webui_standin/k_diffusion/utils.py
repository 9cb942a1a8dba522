"""k_diffusion/utils.py at ab527a9a (the k-diffusion commit the webui pins, webui-host-api.md §0):
`append_dims`, which the denoiser scalings and `to_d` use to broadcast per-row sigmas."""


def append_dims(x, target_dims):
    """Appends dimensions to the end of a tensor until it has target_dims dimensions."""
    dims_to_append = target_dims - x.ndim
    if dims_to_append < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x[(...,) + (None,) * dims_to_append]
