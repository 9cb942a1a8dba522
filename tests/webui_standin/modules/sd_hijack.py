"""modules/sd_hijack.py (v1.10.1): choosing the attention optimisation, class-wide.

Facts encoded (webui-host-api.md §4.2 "Selection", "When the class-level replacement is
(re)applied", §4.1):
- `apply_optimizations(option=None)` first undoes (`undo_optimizations`: the plain
  `hypernetwork.attention_CrossAttention_forward` on both classes), then applies the optimisation
  named by `opts.cross_attention_optimization`: "None" keeps the plain forward; "Automatic" picks
  the highest-priority available one (the real CPU pick, InvokeAI, is not in the stand-in); a name
  picks that one. Every application **assigns the class attribute** `forward` of
  `ldm.modules.attention.CrossAttention` and of sgm's `CrossAttention` (imaginAIry's copy of
  `sgm.modules.attention` stands for sgm, as in tests/engine_support.py), never an instance one.
- `model_hijack.hijack(m)` calls `apply_optimizations()`: it runs on every model load and weight
  reload (sd_models.load_model / reload_model_weights); `redo_hijack(m)` is what a change of the
  "Cross attention optimization" setting runs (initialize_util.configure_opts_onchange).
- `optimizers` is rebuilt by `list_optimizers()` from the built-ins plus
  `script_callbacks.on_list_optimizers` callbacks.
Stand-in addition: `original_forwards` keeps the ldm/sgm forwards found at import so the test
harness can put them back after the session (the webui never does).
"""
import ldm.modules.attention
from imaginairy.modules.sgm import attention as sgm_attention

from modules import errors, script_callbacks, shared, sd_hijack_optimizations
from modules.hypernetworks import hypernetwork

ATTENTION_CLASSES = (ldm.modules.attention.CrossAttention, sgm_attention.CrossAttention)
original_forwards = {cls: cls.__dict__["forward"] for cls in ATTENTION_CLASSES}

optimizers = []
current_optimizer = None


def set_attention_forward(function):
    for cls in ATTENTION_CLASSES:
        cls.forward = function


def list_optimizers():
    new_optimizers = []
    sd_hijack_optimizations.list_optimizers(new_optimizers)
    for c in script_callbacks.ordered_callbacks("list_optimizers"):
        try:
            c.callback(new_optimizers)
        except Exception:
            errors.report("Error listing optimizers", exc_info=True)
    new_optimizers = [x for x in new_optimizers if x.is_available()]
    new_optimizers = sorted(new_optimizers, key=lambda x: x.priority, reverse=True)
    optimizers.clear()
    optimizers.extend(new_optimizers)


def undo_optimizations():
    set_attention_forward(hypernetwork.attention_CrossAttention_forward)


def apply_optimizations(option=None):
    global current_optimizer
    undo_optimizations()
    if not optimizers:
        list_optimizers()
    if option is None:
        option = shared.opts.cross_attention_optimization
    if option == "Automatic" and optimizers:
        matching_optimizer = optimizers[0]
    elif option == "None":
        matching_optimizer = None
    else:
        matching_optimizer = next(iter([x for x in optimizers if x.title() == option or x.name == option]), None)
    if matching_optimizer is None:
        current_optimizer = None
        return ""
    matching_optimizer.apply()
    current_optimizer = matching_optimizer
    return current_optimizer.name


class StableDiffusionModelHijack:
    optimization_method = None

    def hijack(self, m):
        self.optimization_method = apply_optimizations()

    def undo_hijack(self, m):
        pass

    def redo_hijack(self, m):
        self.undo_hijack(m)
        self.hijack(m)


model_hijack = StableDiffusionModelHijack()


def restore_original_forwards():
    """Stand-in only: put ldm's and sgm's own forwards back (harness teardown)."""
    for cls, forward in original_forwards.items():
        cls.forward = forward
