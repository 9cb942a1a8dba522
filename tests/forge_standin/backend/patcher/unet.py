"""backend/patcher/unet.py (dfdcbab6), reduced.

Facts encoded:
- `UnetPatcher.clone` (:26-35): a new patcher on the same model with model_options deep-copied
  (so patch objects are deep-copied too, unless they say otherwise through __deepcopy__).
- `add_conditioning_modifier` (:113) appends to model_options["conditioning_modifiers"];
  `add_block_modifier` (:153) and `add_block_inner_modifier` (:157) append to
  transformer_options["block_modifiers"] / ["block_inner_modifiers"]; `set_model_replace_all(patch,
  target)` (:173-178) registers the patch for every (block in input/middle/output, number < 16,
  transformer_index < 16).
"""
import copy

from backend.patcher.base import ModelPatcher


class UnetPatcher(ModelPatcher):
    def clone(self):
        n = UnetPatcher(self.model, self.load_device, self.offload_device, self.size, self.current_device)
        n.model_options = copy.deepcopy(self.model_options)
        return n

    def append_model_option(self, k, v):
        self.model_options.setdefault(k, []).append(v)

    def append_transformer_option(self, k, v):
        self.model_options.setdefault("transformer_options", {}).setdefault(k, []).append(v)

    def add_conditioning_modifier(self, modifier):
        self.append_model_option("conditioning_modifiers", modifier)

    def add_block_modifier(self, modifier):
        self.append_transformer_option("block_modifiers", modifier)

    def add_block_inner_modifier(self, modifier):
        self.append_transformer_option("block_inner_modifiers", modifier)

    def set_model_replace_all(self, patch, target="attn1"):
        for block_name in ["input", "middle", "output"]:
            for number in range(16):
                for transformer_index in range(16):
                    self.set_model_patch_replace(patch, target, block_name, number, transformer_index)
