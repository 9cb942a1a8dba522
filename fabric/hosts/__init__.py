"""The webui FABRIC runs in, found once at import by what the host has, not by version strings.

Forge (lllyasviel/stable-diffusion-webui-forge) ships the packages `modules_forge` and `backend`
at its root next to A1111's `modules`; AUTOMATIC1111's webui has neither. Each host has a thin
adapter with the same functions (start_job, before_sampling, finish_job, end_job,
register_callbacks); the engine's method lives in fabric/ and knows neither.

Importing this package needs a webui (`modules`): the script imports it, fabric/__init__ does not.
"""
from importlib.util import find_spec


def _is_forge() -> bool:
    return find_spec("modules_forge") is not None and find_spec("backend") is not None


if _is_forge():
    from . import forge as host
else:
    from . import a1111 as host

__all__ = ["host"]
