"""modules/sd_hijack_optimizations.py (v1.10.1): the "sdp" optimisation.

Facts encoded (webui-host-api.md §4.2 "Optimizers", "Shared signature"): an `SdOptimization` has
`name`, `label`, `cmd_opt`, `priority`, `is_available()`, `apply()` and `undo()`; `apply()` assigns
a new function to the **class attribute** `CrossAttention.forward` of ldm **and** sgm; the function
has the signature `(self, x, context=None, mask=None, **kwargs)` (kwargs swallow sgm's extra
keywords), projects k and v from `apply_hypernetworks(loaded_hypernetworks, context)`, and works
for any context length (output length follows x).
"""
import torch

from modules import shared
from modules.hypernetworks import hypernetwork


class SdOptimization:
    name: str = None
    label: str | None = None
    cmd_opt: str | None = None
    priority: int = 0

    def title(self):
        return self.name if self.label is None else f"{self.name} - {self.label}"

    def is_available(self):
        return True

    def apply(self):
        pass

    def undo(self):
        from modules import sd_hijack

        sd_hijack.set_attention_forward(hypernetwork.attention_CrossAttention_forward)


class SdOptimizationSdp(SdOptimization):
    name = "sdp"
    label = "scaled dot product"
    cmd_opt = "opt_sdp_attention"
    priority = 70

    def is_available(self):
        return hasattr(torch.nn.functional, "scaled_dot_product_attention")

    def apply(self):
        from modules import sd_hijack

        sd_hijack.set_attention_forward(scaled_dot_product_attention_forward)


def scaled_dot_product_attention_forward(self, x, context=None, mask=None, **kwargs):
    batch_size, sequence_length, inner_dim = x.shape
    if mask is not None:
        raise NotImplementedError("masks are not used by the UNets of the webui")
    h = self.heads
    q_in = self.to_q(x)
    context = x if context is None else context
    context_k, context_v = hypernetwork.apply_hypernetworks(shared.loaded_hypernetworks, context)
    k_in = self.to_k(context_k)
    v_in = self.to_v(context_v)
    head_dim = inner_dim // h
    q = q_in.view(batch_size, -1, h, head_dim).transpose(1, 2)
    k = k_in.view(batch_size, -1, h, head_dim).transpose(1, 2)
    v = v_in.view(batch_size, -1, h, head_dim).transpose(1, 2)
    dtype = q.dtype
    if shared.opts.upcast_attn:
        q, k, v = q.float(), k.float(), v.float()
    hidden_states = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, h * head_dim)
    hidden_states = hidden_states.to(dtype)
    hidden_states = self.to_out[0](hidden_states)
    hidden_states = self.to_out[1](hidden_states)
    return hidden_states


def list_optimizers(res):
    res.append(SdOptimizationSdp())
