"""backend/patcher/base.py (dfdcbab6), reduced to the patch protocol.

Facts encoded:
- `set_model_options_patch_replace(model_options, patch, name, block_name, number,
  transformer_index=None)` (:15-34) copies transformer_options, patches_replace and its [name] dict
  before writing, so clones never share those dicts; the key is (block_name, number,
  transformer_index), or (block_name, number) without an index.
- `ModelPatcher.model_options` starts as {"transformer_options": {}} (:58); `clone` deep-copies it
  (:79-84); `set_model_patch` appends to transformer_options["patches"][name] (:161-165);
  `set_model_attn1_patch` (:170), `set_model_attn1_replace` (:176), `set_model_attn1_output_patch`
  (:182).
"""
import copy


def set_model_options_patch_replace(model_options, patch, name, block_name, number, transformer_index=None):
    to = model_options["transformer_options"].copy()
    to["patches_replace"] = dict(to.get("patches_replace", {}))
    to["patches_replace"][name] = dict(to["patches_replace"].get(name, {}))
    block = (block_name, number, transformer_index) if transformer_index is not None else (block_name, number)
    to["patches_replace"][name][block] = patch
    model_options["transformer_options"] = to
    return model_options


class ModelPatcher:
    def __init__(self, model, load_device=None, offload_device=None, size=0, current_device=None):
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.size = size
        self.current_device = current_device
        self.model_options = {"transformer_options": {}}

    def clone(self):
        n = ModelPatcher(self.model, self.load_device, self.offload_device, self.size, self.current_device)
        n.model_options = copy.deepcopy(self.model_options)
        return n

    def set_model_patch(self, patch, name):
        to = self.model_options["transformer_options"]
        to.setdefault("patches", {})
        to["patches"][name] = to["patches"].get(name, []) + [patch]

    def set_model_patch_replace(self, patch, name, block_name, number, transformer_index=None):
        self.model_options = set_model_options_patch_replace(self.model_options, patch, name, block_name, number, transformer_index)

    def set_model_attn1_patch(self, patch):
        self.set_model_patch(patch, "attn1_patch")

    def set_model_attn1_replace(self, patch, block_name, number, transformer_index=None):
        self.set_model_patch_replace(patch, "attn1", block_name, number, transformer_index)

    def set_model_attn1_output_patch(self, patch):
        self.set_model_patch(patch, "attn1_output_patch")
