"""FABRIC attached to one UNet for one job.

    fabric = Fabric(unet, references={LIKED: [...], DISLIKED: [...]}, schedule=Schedule(), ...)
    fabric.attach()
    try:
        ... sample ...
    finally:
        fabric.detach()

Attaching puts a forward pre-hook and a forward hook on the UNet and an instance `forward` on
every attn1; nothing else is touched and detach removes exactly those. Per UNet call:

1. The pre-hook reads the timestep, asks the host which reference set each row of the batch uses
   (`rows`), and takes the schedule's weight for each set. Sets with weight 0 and rows without a
   set cost nothing; if no row needs a set, the call runs untouched.
2. Each needed set gets its reference pass: its latents, noised to this timestep, go through the
   UNet with the host's empty-prompt conditioning while each attn1 takes its input as the set's
   tokens. Two ways, picked per call:
   - in the call (fuse_reference_rows; by default where safe, and not on CUDA): the pre-hook
     appends the reference rows to the UNet's own inputs, each attn1 splits them off, and the
     after-hook drops their output. One UNet call instead of two or three: on a CPU, where a
     call's cost is mostly reading the weights, this is most of the speed.
   - separate passes: the references run through the UNet in calls of their own (up to
     reference_batch rows each) that stop after the last attn1. Used when fusing is off or not
     safe: off the CPU, more reference rows than reference_batch; inputs FABRIC cannot extend
     (a longer prompt's context, an unknown per-row input); another extension wrapping the UNet
     or its modules. Each set has its own calls, so that a set's tokens never depend on the
     other set.
3. The main pass runs; in each attn1, the rows of a set attend over [own tokens ; the set's
   tokens] with log(weight) on the reference keys (fabric.engine.attention). Rows without a set go
   through the host's own attention, unchanged.

The host's attention implementation is called as `type(module).forward` at call time, so a webui
that swaps CrossAttention.forward class-wide (every model load, every change of the attention
optimisation setting) is always honoured for the untouched parts.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from .attention import DEFAULT_MAX_LOGITS
from .injection import attend_with_references
from .layers import self_attention_layers
from .noise import noised_latent
from .references import LatentCache, Reference
from .schedule import DISLIKED, LIKED, Schedule
from .tokens import pool_tokens

# Row -> name of the reference set it attends to, or None; None instead of a list: skip the call.
RowSets = Callable[[int], Sequence[str | None] | None]
# (module, hidden states [B, N, C]) -> (keys, values), both [B, N, inner]. The webui's hypernetworks
# transform attention inputs here; the default is the layer's own projections.
ProjectKV = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

_ATTACHED = "_fabric_attached"


def cfg_halves(n_rows: int) -> list[str]:
    """The plain CFG layout: first half cond rows (liked), second half uncond rows (disliked)."""
    return [LIKED] * (n_rows // 2) + [DISLIKED] * (n_rows - n_rows // 2)


def project_kv_default(module: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return module.to_k(hidden), module.to_v(hidden)


class _ReferencePassDone(Exception):
    """Raised by the last attn1 of a reference pass: the rest of the UNet is not needed."""


@dataclass
class _SetState:
    hidden: torch.Tensor  # [1, M, C] recorded reference tokens of one set, flattened
    bias: torch.Tensor  # [M] log(weight) of each of those tokens


@dataclass
class _Plan:
    n_rows: int  # the host's rows of this call
    groups: list[tuple[str, torch.Tensor]]  # (set, row indices) for rows that attend to a set
    plain_rows: torch.Tensor | None  # rows that stay untouched
    layers: list[dict[str, _SetState]] | None  # per attn1: the states of the sets (separate passes)
    fused: "_FusedRows | None" = None  # reference rows appended to this call instead


@dataclass
class _FusedRows:
    spans: dict[str, tuple[int, int]]  # each set's rows among the appended reference rows
    weights: dict[str, float]
    latent_hw: tuple[int, int]

    @property
    def n_rows(self) -> int:
        return max(b for _, b in self.spans.values())


class _LayerForward:
    """The instance `forward` of one attn1 while FABRIC is attached."""

    def __init__(self, fabric: "Fabric", index: int, module: nn.Module):
        self.fabric = fabric
        self.index = index
        self.module = module

    def host_forward(self, x, context=None, mask=None, **kwargs):
        return type(self.module).forward(self.module, x, context=context, mask=mask, **kwargs)

    def __call__(self, x, context=None, mask=None, **kwargs):
        fabric = self.fabric
        if fabric._recording is not None:
            return fabric._record(self, x, context, mask, kwargs)
        plan = fabric._plan
        expected_rows = None if plan is None else plan.n_rows + (plan.fused.n_rows if plan.fused else 0)
        # Another extension may pass attn1 its own key tokens as `context`, one sequence per row:
        # ControlNet's reference_only always does, [own tokens ; its reference's tokens]. The rows
        # then attend over [those tokens ; FABRIC's tokens], so both apply; skipping such calls
        # would silently drop FABRIC whenever reference_only is on.
        foreign = context is not None and (context.shape[0] != x.shape[0] or context.shape[-1] != x.shape[-1])
        special = foreign or mask is not None or kwargs.get("additional_tokens") is not None
        special = special or bool(kwargs.get("n_times_crossframe_attn_in_self"))
        if plan is None or fabric._nested_pass or special or x.shape[0] != expected_rows or fabric.failure is not None:
            return self.host_forward(x, context=context, mask=mask, **kwargs)
        try:
            if plan.fused is not None:
                return fabric._inject_fused(self, x, plan, context)
            return fabric._inject(self, x, plan, plan.layers[self.index], context)
        except Exception as error:  # a fault must not take the generation down
            fabric.fail(error)
            return self.host_forward(x, context=context, mask=mask, **kwargs)


class Fabric:
    """The FABRIC engine for one UNet and one job. See the module docstring."""

    def __init__(
        self,
        unet: nn.Module,
        *,
        references: Mapping[str, Sequence[Reference]],
        schedule: Schedule,
        alphas_cumprod: torch.Tensor,
        reference_kwargs: Mapping[str, torch.Tensor] | None = None,
        reference_concat: Callable[[int, int], torch.Tensor] | None = None,
        rows: RowSets = cfg_halves,
        latent_cache: LatentCache | None = None,
        token_budget: int = 0,
        reference_batch: int = 8,
        project_kv: ProjectKV = project_kv_default,
        upcast: bool = False,
        max_logits: int = DEFAULT_MAX_LOGITS,
        on_failure: Callable[[BaseException], None] | None = None,
        fuse_reference_rows: bool | None = None,
    ):
        """
        references: set name -> references; the row sets name them (LIKED/DISLIKED in the webui).
        alphas_cumprod: the model's [T] schedule; progress and noising are read from it.
        reference_kwargs: UNet keyword inputs of the reference pass with batch 1, expanded to the
            references: `context` (the empty prompt's crossattn) and, for SDXL, `y`.
        reference_concat: (latent h, w) -> [1, c, h, w] extra input channels for UNets whose input
            has more channels than the latent (inpainting models).
        token_budget: at most this many reference tokens per set and layer (0: no limit); pooled.
            It makes the attention cheaper and the recorded states smaller; the references' own
            pass through the UNet is the same as without it (same calls, same rows).
        reference_batch: references per UNet call of the reference pass; halved on out-of-memory.
        fuse_reference_rows: run the reference rows inside the host's UNet call where that is
            safe (see the module docstring); off the CPU at most reference_batch of them. Rows
            then depend, at float-rounding level, on the batch they ran in. None (auto): everywhere but on
            CUDA, where an out-of-memory error inside the host's call could not be retried with
            fewer rows, as separate passes are.
        """
        self.unet = unet
        self.references = {
            name: sorted((r for r in refs if r.weight > 0), key=lambda r: (r.key, r.weight))
            for name, refs in references.items()
        }
        self.schedule = schedule
        self.alphas_cumprod = alphas_cumprod
        self.reference_kwargs = dict(reference_kwargs or {})
        self.reference_concat = reference_concat
        self.rows = rows
        self.latent_cache = latent_cache if latent_cache is not None else LatentCache()
        self.token_budget = token_budget
        self.reference_batch = max(1, reference_batch)
        self.project_kv = project_kv
        self.upcast = upcast
        self.max_logits = max_logits
        self.on_failure = on_failure
        self.fuse_reference_rows = fuse_reference_rows
        self.failure: BaseException | None = None
        self.calls_with_feedback = 0
        self.reference_passes = 0  # per set and chunk of references
        self.reference_calls = 0  # UNet calls of separate reference passes
        self.fused_calls = 0  # host UNet calls that carried the reference rows
        self._layers = [_LayerForward(self, i, m) for i, (_, m) in enumerate(self_attention_layers(unet))]
        self._handles: list = []
        self._plan: _Plan | None = None
        self._recording: list[torch.Tensor | None] | None = None
        self._keep_rows: int | None = None  # the host's rows of a call that carries reference rows
        self._wrapped_by_others = False  # another extension's forward on a module of the UNet
        self._call_input: torch.Tensor | None = None  # x of the UNet call being planned for
        self._nested_pass = False  # another extension's own pass through the UNet inside that call

    # -- attach / detach ---------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> "Fabric":
        detach(self.unet)  # whatever a failed job may have left
        if not self._layers:
            raise ValueError("FABRIC: this UNet has no self-attention layers (attn1) to attach to")
        self._wrapped_by_others = any(_foreign_forward(module) for module in self.unet.modules())
        for layer in self._layers:
            layer.module.forward = layer
        self._handles.append(self.unet.register_forward_pre_hook(self._before_unet, with_kwargs=True))
        self._handles.append(_register_after_hook(self.unet, self._after_unet))
        entry = _entry_block(self.unet)
        if entry is not None:
            self._handles.append(entry.register_forward_pre_hook(self._before_entry_block))
        setattr(self.unet, _ATTACHED, self)
        return self

    def detach(self) -> None:
        """Remove every hook and instance attribute; idempotent."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for layer in self._layers:
            if layer.module.__dict__.get("forward") is layer:
                del layer.module.forward
        if self.unet.__dict__.get(_ATTACHED) is self:
            delattr(self.unet, _ATTACHED)
        self._plan = None
        self._recording = None

    def __enter__(self) -> "Fabric":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    # -- per UNet call -----------------------------------------------------------------------

    def _before_unet(self, unet, args, kwargs):
        self._plan = None
        self._keep_rows = None
        self._nested_pass = False
        self._call_input = args[0] if args else kwargs.get("x")
        if self._recording is not None or self.failure is not None:
            return None
        try:
            self._plan, fused_inputs = self._make_plan(args, kwargs)
        except Exception as error:
            self.fail(error)
            return None
        if fused_inputs is None:
            return None
        self._keep_rows = self._plan.n_rows
        self._call_input = fused_inputs[0][0] if fused_inputs[0] else fused_inputs[1]["x"]
        return fused_inputs

    def _before_entry_block(self, block, args):
        """The UNet's first block sees each pass's input. Inside a planned call, an input other
        than the call's own is another extension's pass through the UNet: ControlNet's
        reference_only runs the same rows with its reference latent (its bank) before the real
        pass. FABRIC stays out of that pass, so that the bank holds ControlNet's reference alone."""
        if self._plan is None or self._recording is not None or not args:
            return None
        self._nested_pass = not _same_input(args[0], self._call_input)
        return None

    def _after_unet(self, module, args, output):
        self._plan = None
        self._call_input = None
        self._nested_pass = False
        keep, self._keep_rows = self._keep_rows, None
        if keep is not None and isinstance(output, torch.Tensor):
            return output[:keep]  # the reference rows' output is not the host's
        return None

    def fail(self, error: BaseException) -> None:
        """Turn FABRIC off for the rest of the job (the host keeps generating) and report why once."""
        self._plan = None
        self._recording = None
        if self.failure is None:
            self.failure = error
            if self.on_failure is not None:
                self.on_failure(error)
            else:
                warnings.warn(f"FABRIC disabled for the rest of this job: {error!r}", RuntimeWarning)

    def _make_plan(self, args, kwargs) -> tuple[_Plan | None, tuple | None]:
        """The plan of one UNet call, and its extended (args, kwargs) if it carries the references."""
        x = args[0] if args else kwargs["x"]
        timesteps = args[1] if len(args) > 1 else kwargs.get("timesteps")
        if timesteps is None:
            return None, None
        row_sets = self.rows(x.shape[0])
        if row_sets is None:
            return None, None
        if len(row_sets) != x.shape[0]:
            raise ValueError(f"FABRIC: {len(row_sets)} row roles for a batch of {x.shape[0]}")
        t_value = float(timesteps.flatten()[0])
        weights = self.schedule.weights(t_value, len(self.alphas_cumprod))
        wanted: dict[str, list[int]] = {}
        plain: list[int] = []
        for row, name in enumerate(row_sets):
            if name is not None and weights.get(name, 0.0) > 0 and self.references.get(name):
                wanted.setdefault(name, []).append(row)
            else:
                plain.append(row)
        if not wanted:
            return None, None
        self.calls_with_feedback += 1
        device = x.device
        groups = [(name, torch.tensor(rows, device=device)) for name, rows in wanted.items()]
        plain_rows = torch.tensor(plain, device=device) if plain else None
        fused = self._fused_inputs(list(wanted), args, kwargs, x, timesteps)
        if fused is not None:
            inputs, spans = fused
            rows = _FusedRows(spans, {name: weights[name] for name in wanted}, tuple(x.shape[-2:]))
            self.fused_calls += 1
            self.reference_passes += len(spans)
            return _Plan(x.shape[0], groups, plain_rows, None, rows), inputs
        layers: list[dict[str, _SetState]] = [{} for _ in self._layers]
        # A pass per set keeps its states bit-independent of the other set (batched kernels
        # may round differently per batch size).
        for name in wanted:
            refs = self.references[name]
            for index, hidden in enumerate(self._reference_pass(name, x, timesteps)):
                layers[index][name] = self._set_state(hidden, refs, weights[name], tuple(x.shape[-2:]))
        return _Plan(x.shape[0], groups, plain_rows, layers), None

    def _fused_inputs(self, names: list[str], args, kwargs, x, timesteps):
        """The UNet's inputs with the reference rows of `names` appended, and each set's span among
        them; None where fusing is off or not known to be safe (then: separate passes)."""
        n_rows = x.shape[0]
        total = sum(len(self.references[name]) for name in names)
        fuse = self.fuse_reference_rows
        if fuse is None:
            fuse = x.device.type != "cuda"
        if not fuse or total > self._fused_row_limit(x.device) or self._unet_wrapped():
            return None
        if len(args) > len(_UNET_INPUTS):
            return None
        inputs = dict(zip(_UNET_INPUTS, args), **kwargs)
        extendable = {"x", "timesteps", *self.reference_kwargs}
        for name, value in inputs.items():
            if value is None or name in extendable:
                continue
            if isinstance(value, (torch.Tensor, list, tuple, dict)):
                return None  # a per-row input FABRIC has no reference counterpart for
        if not isinstance(timesteps, torch.Tensor) or timesteps.shape != (n_rows,):
            return None
        for name, value in self.reference_kwargs.items():
            own = inputs.get(name)
            if not isinstance(own, torch.Tensor) or own.shape[0] != n_rows or own.shape[1:] != value.shape[1:]:
                return None  # e.g. a prompt longer than 75 tokens: contexts of different lengths
        z, t_ref, ref_kwargs, spans = self._reference_inputs(names, x, timesteps)
        extended = {"x": z, "timesteps": t_ref, **ref_kwargs}
        for name, extra in extended.items():
            inputs[name] = torch.cat([inputs[name], extra.to(inputs[name].dtype)])
        positional = len(args)
        new_args = tuple(inputs.pop(name) for name in _UNET_INPUTS[:positional])
        return (new_args, inputs), spans

    def _fused_row_limit(self, device: torch.device) -> float:
        """The most reference rows a host call may carry. reference_batch bounds them where memory
        is short (a GPU's). On the CPU one call is cheaper than several at any count (8+8 at
        batch 1, fabric.bench: 3.3x vanilla in the call, 4.3x in separate calls)."""
        return math.inf if device.type == "cpu" else self.reference_batch

    def _unet_wrapped(self) -> bool:
        """Whether another extension wraps the UNet (ControlNet replaces its forward per job; ToMe
        adds a pre-hook) or wrapped one of its modules before FABRIC attached: such code may not
        expect the extra rows."""
        if _foreign_forward(self.unet) or self._wrapped_by_others:
            return True
        own = {handle.id for handle in self._handles}
        return not (set(self.unet._forward_pre_hooks) <= own and set(self.unet._forward_hooks) <= own)

    def _set_state(self, hidden: torch.Tensor, refs: list[Reference], weight: float, latent_hw: tuple[int, int]) -> _SetState:
        """[R, N, C] recorded tokens -> one flattened key sequence with its log-weight bias."""
        log_pool = 0.0
        if self.token_budget > 0 and hidden.shape[0] * hidden.shape[1] > self.token_budget:
            hidden, log_pool = pool_tokens(hidden, self.token_budget, latent_hw)
        per_token = hidden.shape[1]
        log_weights = torch.tensor([math.log(weight * r.weight) + log_pool for r in refs], dtype=torch.float32)
        bias = log_weights.repeat_interleave(per_token).to(device=hidden.device)
        return _SetState(hidden.reshape(1, -1, hidden.shape[-1]), bias)

    # -- reference pass ----------------------------------------------------------------------

    def reference_latents(self, name: str, height: int, width: int) -> list[torch.Tensor]:
        """The clean latents of a set at a latent size (encoded once, then cached)."""
        return [self.latent_cache.latent(r, height, width) for r in self.references[name]]

    def _reference_pass(self, name: str, x: torch.Tensor, timesteps: torch.Tensor) -> list[torch.Tensor]:
        """The recorded attn1 inputs of one set, [R, N, C] per layer, from UNet calls of its own."""
        z, t_ref, kwargs, _ = self._reference_inputs([name], x, timesteps)
        batch = self.reference_batch
        while True:
            try:
                recorded = self._run_reference_chunks(z, t_ref, kwargs, batch)
                break
            except torch.OutOfMemoryError:
                if batch == 1:
                    raise
                batch = max(1, batch // 2)
                self.reference_batch = batch
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        return recorded

    def _reference_inputs(self, names: list[str], x: torch.Tensor, timesteps: torch.Tensor):
        """UNet inputs of the references of `names` at this call's timestep: (latents, timesteps,
        keyword inputs, each set's (begin, end) rows)."""
        height, width = x.shape[-2:]
        t_value = float(timesteps.flatten()[0])
        noised, spans = [], {}
        for name in names:
            refs = self.references[name]
            latents = self.reference_latents(name, height, width)
            spans[name] = (len(noised), len(noised) + len(refs))
            noised += [noised_latent(l.to(x.device), r.key, t_value, self.alphas_cumprod) for l, r in zip(latents, refs)]
        total = len(noised)
        z = torch.stack(noised).to(x.dtype)
        if self.reference_concat is not None:
            extra = self.reference_concat(height, width).to(device=x.device, dtype=x.dtype)
            z = torch.cat([z, extra.expand(total, *extra.shape[1:])], dim=1)
        if z.shape[1] != x.shape[1]:
            raise ValueError(
                f"FABRIC: the UNet takes {x.shape[1]} input channels, the references have {z.shape[1]}"
            )
        t_ref = timesteps.flatten()[:1].expand(total)
        kwargs = {
            k: v.to(device=x.device, dtype=x.dtype if v.is_floating_point() else v.dtype).expand(total, *v.shape[1:])
            for k, v in self.reference_kwargs.items()
        }
        return z, t_ref, kwargs, spans

    def _run_reference_chunks(self, z, t_ref, kwargs, batch: int) -> list[torch.Tensor]:
        chunks: list[list[torch.Tensor]] = [[] for _ in self._layers]
        forward = type(self.unet).forward
        for begin in range(0, z.shape[0], batch):
            end = min(begin + batch, z.shape[0])
            self._recording = [None] * len(self._layers)
            try:
                forward(self.unet, z[begin:end], t_ref[begin:end], **{k: v[begin:end] for k, v in kwargs.items()})
            except _ReferencePassDone:
                pass
            finally:
                recorded, self._recording = self._recording, None
            self.reference_passes += 1
            self.reference_calls += 1
            for index, hidden in enumerate(recorded):
                if hidden is None:
                    raise RuntimeError(f"FABRIC: self-attention layer {index} was not called by the reference pass")
                chunks[index].append(hidden)
        return [torch.cat(parts) if len(parts) > 1 else parts[0] for parts in chunks]

    def _record(self, layer: _LayerForward, x, context, mask, kwargs):
        recording = self._recording
        recording[layer.index] = x.detach()
        out = layer.host_forward(x, context=context, mask=mask, **kwargs)
        if all(hidden is not None for hidden in recording):
            raise _ReferencePassDone
        return out

    # -- main pass ---------------------------------------------------------------------------

    def _inject_fused(self, layer: _LayerForward, x: torch.Tensor, plan: _Plan, context=None) -> torch.Tensor:
        """attn1 of a call that carries the reference rows after the host's rows: those rows take
        plain self-attention, as in a reference pass, and their input is the sets' tokens."""
        fused, n_rows = plan.fused, plan.n_rows
        own, references = x[:n_rows], x[n_rows:]
        states = {
            name: self._set_state(references[a:b], self.references[name], fused.weights[name], fused.latent_hw)
            for name, (a, b) in fused.spans.items()
        }
        ref_context = None if context is None else context[n_rows:]
        out = self._inject(layer, own, plan, states, None if context is None else context[:n_rows])
        return torch.cat([out, layer.host_forward(references, context=ref_context)])

    def _inject(self, layer: _LayerForward, x: torch.Tensor, plan: _Plan, states: dict[str, _SetState],
                context: torch.Tensor | None = None) -> torch.Tensor:
        """context: the rows' own key tokens when the caller passed them (None: x itself)."""
        module = layer.module
        single = len(plan.groups) == 1 and plan.plain_rows is None

        def select(t, rows):
            return None if t is None else t.index_select(0, rows)

        out = None if single else torch.empty_like(x)
        if plan.plain_rows is not None:
            rows = plan.plain_rows
            out.index_copy_(0, rows, layer.host_forward(x.index_select(0, rows), context=select(context, rows)))
        for name, rows in plan.groups:
            rows_x = x if single else x.index_select(0, rows)
            rows_context = context if single else select(context, rows)
            result = self._attend(module, rows_x, states[name], rows_context)
            if single:
                return result
            out.index_copy_(0, rows, result)
        return out

    def _attend(self, module: nn.Module, x: torch.Tensor, state: _SetState, context: torch.Tensor | None = None) -> torch.Tensor:
        q = module.to_q(x)
        k, v = self.project_kv(module, x if context is None else context)
        ref_k, ref_v = self.project_kv(module, state.hidden.to(x.dtype))
        out = attend_with_references(q, k, v, ref_k, ref_v, state.bias, module.heads,
                                     upcast=self.upcast, max_logits=self.max_logits)
        return module.to_out(out)


def _register_after_hook(module: nn.Module, hook):
    try:  # torch >= 2.1 can call it also when the forward raises
        return module.register_forward_hook(hook, always_call=True)
    except TypeError:
        return module.register_forward_hook(hook)


# The UNet's inputs by position: ldm's and sgm's UNetModel.forward(x, timesteps, context, y, **kwargs).
_UNET_INPUTS = ("x", "timesteps", "context", "y")


def _entry_block(unet: nn.Module) -> nn.Module | None:
    """The first block of ldm's and sgm's UNetModel, which takes the pass's input x."""
    blocks = getattr(unet, "input_blocks", None)
    return blocks[0] if isinstance(blocks, nn.ModuleList) and len(blocks) else None


def _same_input(h, x) -> bool:
    """Whether the first block's input is the call's x (the UNet may have cast it to its dtype)."""
    if not isinstance(h, torch.Tensor) or not isinstance(x, torch.Tensor) or h.shape != x.shape:
        return False
    if h.data_ptr() == x.data_ptr():
        return True
    return bool(torch.allclose(h.float(), x.float(), rtol=1e-2, atol=1e-2))


def _foreign_forward(module: nn.Module) -> bool:
    """Whether an instance attribute replaces the module's forward (or a transformer block's inner
    _forward) with something other than FABRIC's layer or the class's own method; ControlNet, for
    one, leaves the bound class method behind when it unhooks."""
    for name in ("forward", "_forward"):
        value = module.__dict__.get(name)
        if value is None or isinstance(value, _LayerForward):
            continue
        if getattr(value, "__self__", None) is module and getattr(value, "__func__", None) is getattr(type(module), name, None):
            continue
        return True
    return False


def attached(unet: nn.Module) -> Fabric | None:
    return unet.__dict__.get(_ATTACHED)


def detach(unet: nn.Module) -> None:
    """Detach whatever FABRIC left on this UNet, including a Fabric whose job failed; idempotent."""
    fabric = attached(unet)
    if fabric is not None:
        fabric.detach()
    for _, module in self_attention_layers(unet):
        if isinstance(module.__dict__.get("forward"), _LayerForward):
            del module.forward
