"""The engine on the real ldm UNet (and sgm's transformer blocks)."""
import pytest
import torch
from torch import nn

import fabric
from engine_support import (
    CONTEXT_DIM,
    cfg_inputs,
    make_fabric,
    reference,
    sd15_unet,
    small_unet,
    with_sgm_blocks,
)
from fabric import DISLIKED, LIKED, Schedule
from ldm.modules.attention import CrossAttention

LIKED_REFS = [reference("aa11", 1), reference("bb22", 2, weight=1.5)]
DISLIKED_REFS = [reference("cc33", 3)]


@pytest.fixture(scope="module")
def unet():
    return small_unet(seed=0)


def run(unet, x, t, context, fab=None):
    with torch.no_grad():
        if fab is None:
            return unet(x, t, context=context)
        with fab:
            return unet(x, t, context=context)


def module_snapshot(unet):
    """Everything attach may touch: instance dicts, hooks, and the state dict."""
    return [
        (name, dict(m.__dict__), dict(m._forward_pre_hooks), dict(m._forward_hooks),
         dict(m._forward_pre_hooks_with_kwargs), dict(m._forward_hooks_always_called))
        for name, m in unet.named_modules()
    ], {k: v.clone() for k, v in unet.state_dict().items()}


def assert_same_snapshot(a, b):
    modules_a, state_a = a
    modules_b, state_b = b
    assert [m[0] for m in modules_a] == [m[0] for m in modules_b]
    for ma, mb in zip(modules_a, modules_b):
        assert ma[1].keys() == mb[1].keys(), ma[0]
        for key in ma[1]:
            assert ma[1][key] is mb[1][key], (ma[0], key)
        assert ma[2:] == mb[2:], ma[0]
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_finds_every_self_attention_layer(unet):
    names = [name for name, _ in fabric.engine.layers.self_attention_layers(unet)]
    assert len(names) == 7 and all(name.endswith("transformer_blocks.0.attn1") for name in names)


def test_feedback_changes_the_output(unet):
    x, t, ctx = cfg_inputs()
    vanilla = run(unet, x, t, ctx)
    fab = make_fabric(unet, LIKED_REFS, DISLIKED_REFS)
    out = run(unet, x, t, ctx, fab)
    assert fab.calls_with_feedback == 1 and fab.reference_passes == 2
    assert (out - vanilla).abs().max() > 1e-3


@pytest.mark.parametrize(
    "liked,disliked,schedule",
    [
        ([], [], Schedule()),  # no references
        (LIKED_REFS, DISLIKED_REFS, Schedule(strength=0.0, min_strength=0.0)),  # all weights 0
        (LIKED_REFS, DISLIKED_REFS, Schedule(start=0.9, end=1.0)),  # outside the window
        ([reference("zz", 9, weight=0.0)], [], Schedule()),  # per-image weight 0
    ],
)
def test_nothing_to_do_is_bit_identical(unet, liked, disliked, schedule):
    x, t, ctx = cfg_inputs(batch=2)
    vanilla = run(unet, x, t, ctx)
    fab = make_fabric(unet, liked, disliked, schedule=schedule)
    assert torch.equal(run(unet, x, t, ctx, fab), vanilla)
    assert fab.reference_passes == 0


def test_disliked_set_does_not_touch_cond_rows_and_vice_versa(unet):
    x, t, ctx = cfg_inputs(batch=2)
    base = run(unet, x, t, ctx, make_fabric(unet, LIKED_REFS, DISLIKED_REFS))
    other_disliked = run(unet, x, t, ctx, make_fabric(unet, LIKED_REFS, [reference("dd44", 4)]))
    other_liked = run(unet, x, t, ctx, make_fabric(unet, [reference("ee55", 5)], DISLIKED_REFS))
    assert torch.equal(base[:2], other_disliked[:2])
    assert not torch.allclose(base[2:], other_disliked[2:])
    assert torch.equal(base[2:], other_liked[2:])
    assert not torch.allclose(base[:2], other_liked[:2])


def test_rows_without_a_set_are_untouched(unet):
    x, t, ctx = cfg_inputs(batch=2)
    vanilla = run(unet, x, t, ctx)
    out = run(unet, x, t, ctx, make_fabric(unet, LIKED_REFS, [], rows=lambda n: [LIKED, None, None, None]))
    assert not torch.allclose(out[0], vanilla[0])
    torch.testing.assert_close(out[1:], vanilla[1:], rtol=0, atol=1e-5)


def test_detach_restores_everything(unet):
    before = module_snapshot(unet)
    x, t, ctx = cfg_inputs()
    fab = make_fabric(unet, LIKED_REFS, DISLIKED_REFS).attach()
    assert fabric.attached(unet) is fab
    with torch.no_grad():
        unet(x, t, context=ctx)
    fab.detach()
    fab.detach()  # idempotent
    assert fabric.attached(unet) is None
    assert_same_snapshot(before, module_snapshot(unet))


def test_detach_after_an_exception_in_the_middle_of_a_forward(unet):
    before = module_snapshot(unet)
    x, t, ctx = cfg_inputs()
    vanilla = run(unet, x, t, ctx)
    broken = unet.output_blocks[1]

    def explode(*_):
        raise RuntimeError("boom")

    handle = broken.register_forward_pre_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            run(unet, x, t, ctx, make_fabric(unet, LIKED_REFS, DISLIKED_REFS))
    finally:
        handle.remove()
    assert_same_snapshot(before, module_snapshot(unet))
    assert torch.equal(run(unet, x, t, ctx), vanilla)


def test_a_job_that_never_detached_is_cleaned_by_the_next_attach(unet):
    before = module_snapshot(unet)
    make_fabric(unet, LIKED_REFS).attach()  # a failed job that never reached detach
    fab = make_fabric(unet, LIKED_REFS).attach()
    assert sum(len(m._forward_pre_hooks) for m in unet.modules()) == 2  # the UNet's, its first block's
    fab.detach()
    assert_same_snapshot(before, module_snapshot(unet))
    make_fabric(unet, LIKED_REFS).attach()
    fabric.detach(unet)  # what the webui script does at the start of a job and on unload
    assert_same_snapshot(before, module_snapshot(unet))


def test_fault_in_a_reference_disables_fabric_for_the_job(unet):
    x, t, ctx = cfg_inputs()
    vanilla = run(unet, x, t, ctx)

    def broken_encoder(h, w):
        raise OSError("corrupt image")

    failures = []
    fab = make_fabric(unet, [fabric.Reference("bad", broken_encoder)], on_failure=failures.append)
    assert torch.equal(run(unet, x, t, ctx, fab), vanilla)
    assert isinstance(fab.failure, OSError) and failures == [fab.failure]


def einsum_attention(self, x, context=None, mask=None, **kwargs):
    """Another attention implementation, as the webui installs class-wide."""
    einsum_attention.calls += 1
    h = self.heads
    context = x if context is None else context
    q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
    q, k, v = (t.view(t.shape[0], t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))
    attn = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
    return self.to_out(out)


einsum_attention.calls = 0


@pytest.mark.parametrize("when", ["before", "after"])
def test_injection_survives_a_class_wide_attention_swap(unet, monkeypatch, when):
    x, t, ctx = cfg_inputs()
    expected = run(unet, x, t, ctx, make_fabric(unet, LIKED_REFS, DISLIKED_REFS))
    if when == "before":
        monkeypatch.setattr(CrossAttention, "forward", einsum_attention)
    fab = make_fabric(unet, LIKED_REFS, DISLIKED_REFS).attach()
    try:
        if when == "after":
            monkeypatch.setattr(CrossAttention, "forward", einsum_attention)
        einsum_attention.calls = 0
        with torch.no_grad():
            out = unet(x, t, context=ctx)
    finally:
        fab.detach()
    assert einsum_attention.calls > 0  # the host's implementation runs for everything else
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    assert "forward" not in CrossAttention.__dict__ or CrossAttention.__dict__["forward"] is einsum_attention


class ReferenceOnlyBlocks:
    """ControlNet's reference_only, as sd-webui-controlnet's hook.py does it: every transformer
    block's `_forward` is replaced per instance, and attn1 is called with its keys passed as
    `context`: [the block's own normed tokens ; the reference's tokens] (just the own tokens when
    it has no reference, as in its write pass)."""

    def __init__(self, unet, extra_tokens: int):
        self.blocks = [m for m in unet.modules() if fabric.engine.layers.is_transformer_block(m)]
        self.extra_tokens = extra_tokens

    def __enter__(self):
        generator = torch.Generator().manual_seed(11)
        for block in self.blocks:
            bank = torch.randn(1, self.extra_tokens, block.norm1.normalized_shape[0], generator=generator)

            def hacked(x, context=None, block=block, bank=bank):
                x_norm1 = block.norm1(x)
                keys = torch.cat([x_norm1, bank.expand(x.shape[0], -1, -1)], dim=1) if bank.shape[1] else x_norm1
                x = block.attn1(x_norm1, context=keys) + x
                x = block.attn2(block.norm2(x), context=context) + x
                return block.ff(block.norm3(x)) + x

            block._forward = hacked
        return self

    def __exit__(self, *exc):
        for block in self.blocks:
            del block._forward


def test_attn1_keys_passed_as_context_by_controlnet_reference_only(unet):
    """FABRIC applies on top of the keys another extension passes to attn1, instead of skipping
    the call (which silently dropped FABRIC whenever ControlNet's reference_only was on)."""
    x, t, ctx = cfg_inputs()
    # separate reference calls, as under ReferenceOnlyBlocks (another extension's forwards)
    fabric_alone = run(unet, x, t, ctx, make_fabric(unet, LIKED_REFS, DISLIKED_REFS, fuse_reference_rows=False))
    with ReferenceOnlyBlocks(unet, extra_tokens=0):  # keys = own tokens: the same as no context
        assert torch.equal(run(unet, x, t, ctx, make_fabric(unet, LIKED_REFS, DISLIKED_REFS)), fabric_alone)
    with ReferenceOnlyBlocks(unet, extra_tokens=6):
        reference_only = run(unet, x, t, ctx)
        both = run(unet, x, t, ctx, make_fabric(unet, LIKED_REFS, DISLIKED_REFS))
        nothing_to_do = make_fabric(unet, LIKED_REFS, DISLIKED_REFS, schedule=Schedule(strength=0.0, min_strength=0.0))
        assert torch.equal(run(unet, x, t, ctx, nothing_to_do), reference_only)
        only_cond = run(unet, x, t, ctx, make_fabric(unet, LIKED_REFS, [], rows=lambda n: [LIKED, None]))
    assert (both - reference_only).abs().max() > 1e-3
    assert (both - fabric_alone).abs().max() > 1e-3
    assert not torch.allclose(only_cond[0], reference_only[0])
    torch.testing.assert_close(only_cond[1], reference_only[1], rtol=0, atol=1e-5)  # plain rows keep their keys


class NestedPassFirst:
    """ControlNet's reference_only: its forward on the UNet first runs the same rows with its own
    reference latent through the class forward (writing its bank), then the real pass."""

    def __init__(self, unet, other_x):
        self.unet, self.other_x, self.nested_outputs = unet, other_x, []

    def __enter__(self):
        unet = self.unet

        def forward(x, timesteps=None, context=None, **kwargs):
            self.nested_outputs.append(type(unet).forward(unet, self.other_x, timesteps, context=context))
            return type(unet).forward(unet, x, timesteps, context=context)

        unet.forward = forward
        return self

    def __exit__(self, *exc):
        del self.unet.forward


def test_another_extensions_own_pass_inside_the_call_is_left_alone(unet):
    x, t, ctx = cfg_inputs()
    other = torch.randn_like(x)
    separate = dict(fuse_reference_rows=False)  # as under any foreign forward
    with NestedPassFirst(unet, other) as vanilla_nested:
        vanilla = run(unet, x, t, ctx)
    with NestedPassFirst(unet, other) as nested:
        both = run(unet, x, t, ctx, make_fabric(unet, LIKED_REFS, DISLIKED_REFS, **separate))
    fabric_alone = run(unet, x, t, ctx, make_fabric(unet, LIKED_REFS, DISLIKED_REFS, **separate))
    assert torch.equal(nested.nested_outputs[0], vanilla_nested.nested_outputs[0])  # its pass: untouched
    assert torch.equal(both, fabric_alone)  # the real pass: FABRIC as without the nested pass
    assert not torch.allclose(both, vanilla)


def test_same_inputs_same_output_and_global_rng_untouched(unet):
    x, t, ctx = cfg_inputs()
    state = torch.get_rng_state()
    a = run(unet, x, t, ctx, make_fabric(unet, LIKED_REFS, DISLIKED_REFS))
    b = run(unet, x, t, ctx, make_fabric(unet, LIKED_REFS, DISLIKED_REFS))
    assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state())


def test_a_rows_output_does_not_depend_on_the_other_rows(unet):
    x2, t2, ctx2 = cfg_inputs(batch=2, seed=7)
    pair = run(unet, x2, t2, ctx2, make_fabric(unet, LIKED_REFS, DISLIKED_REFS))
    # image 1 alone: rows [cond_1, uncond_1]
    x1, t1, ctx1 = x2[[1, 3]], t2[[1, 3]], ctx2[[1, 3]]
    alone = run(unet, x1, t1, ctx1, make_fabric(unet, LIKED_REFS, DISLIKED_REFS))
    torch.testing.assert_close(alone, pair[[1, 3]], rtol=1e-5, atol=1e-5)


def test_reference_rows_run_inside_the_call_where_safe(unet):
    x, t, ctx = cfg_inputs()
    fused = make_fabric(unet, LIKED_REFS[:1], DISLIKED_REFS)
    separate = make_fabric(unet, LIKED_REFS[:1], DISLIKED_REFS, fuse_reference_rows=False)
    out, expected = run(unet, x, t, ctx, fused), run(unet, x, t, ctx, separate)
    assert (fused.fused_calls, fused.reference_calls, fused.reference_passes) == (1, 0, 2)
    assert (separate.fused_calls, separate.reference_calls, separate.reference_passes) == (0, 2, 2)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


class _Wrapper:
    """Another extension's forward, the way ControlNet wraps the UNet per job."""

    def __init__(self, module):
        self.module = module

    def __call__(self, *args, **kwargs):
        return type(self.module).forward(self.module, *args, **kwargs)


def _with_foreign_forward(unet, name):
    module = unet.get_submodule(name)
    module.forward = _Wrapper(module)
    return lambda: delattr(module, "forward")


FALLBACKS = {
    "a longer context than the empty prompt's": lambda unet: ({}, {"context_tokens": 10}, None),
    "an input without a reference counterpart": lambda unet: ({}, {"extra": True}, None),
    "the UNet wrapped by another extension": lambda unet: ({}, {}, _with_foreign_forward(unet, "")),
    "a module wrapped by another extension": lambda unet: (
        {}, {}, _with_foreign_forward(unet, "input_blocks.3.1.transformer_blocks.0.attn2")),
    "another extension's pre-hook": lambda unet: ({}, {}, unet.register_forward_pre_hook(lambda *_: None).remove),
}


@pytest.mark.parametrize("case", FALLBACKS)
def test_separate_reference_passes_where_fusing_is_not_safe(unet, case):
    sets, call, undo = FALLBACKS[case](unet)
    try:
        liked = sets.get("liked", LIKED_REFS[:1])
        x, t, ctx = cfg_inputs()
        if "context_tokens" in call:
            ctx = torch.randn(x.shape[0], call["context_tokens"], CONTEXT_DIM)
        extra = {"extra": torch.zeros(x.shape[0], 3)} if call.get("extra") else {}
        outputs = []
        for fuse in (True, False):
            fab = make_fabric(unet, liked, DISLIKED_REFS, fuse_reference_rows=fuse,
                              reference_batch=sets.get("reference_batch", 8))
            with torch.no_grad(), fab:
                outputs.append(unet(x, t, context=ctx, **extra))
            assert fab.fused_calls == 0 and fab.reference_calls > 0 and fab.failure is None
        torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    finally:
        if undo is not None:
            undo()


def test_on_the_cpu_more_references_than_reference_batch_still_ride_in_the_call(unet):
    """reference_batch bounds the rows of a call where memory is short; on the CPU one call is
    cheaper than several, whatever the count. Off the CPU the bound holds."""
    x, t, ctx = cfg_inputs()
    fab = make_fabric(unet, LIKED_REFS, DISLIKED_REFS, reference_batch=1)
    fused = run(unet, x, t, ctx, fab)
    assert fab.fused_calls == 1 and fab.reference_calls == 0
    separate = run(unet, x, t, ctx, make_fabric(unet, LIKED_REFS, DISLIKED_REFS, fuse_reference_rows=False))
    torch.testing.assert_close(fused, separate, rtol=1e-4, atol=1e-4)
    assert fab._fused_row_limit(torch.device("cuda")) == 1 and fab._fused_row_limit(torch.device("mps")) == 1


def test_a_forward_left_behind_as_the_class_method_still_fuses(unet):
    """ControlNet unhooks by setting the UNet's forward back to the bound class method."""
    unet.forward = unet.forward
    try:
        x, t, ctx = cfg_inputs()
        fab = make_fabric(unet, LIKED_REFS[:1], DISLIKED_REFS)
        run(unet, x, t, ctx, fab)
        assert fab.fused_calls == 1
    finally:
        del unet.forward


def test_a_fault_in_a_call_with_reference_rows_returns_the_hosts_rows(unet, monkeypatch):
    x, t, ctx = cfg_inputs()
    fab = make_fabric(unet, LIKED_REFS[:1], DISLIKED_REFS)
    calls = []

    def faulty(*args):
        calls.append(args)
        if len(calls) > 3:
            raise RuntimeError("boom in layer 2")
        return type(fab)._set_state(fab, *args)

    monkeypatch.setattr(fab, "_set_state", faulty)
    with pytest.warns(RuntimeWarning, match="boom"):
        out = run(unet, x, t, ctx, fab)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert fab.failure is not None and fab.fused_calls == 1


def test_reference_order_does_not_matter(unet):
    x, t, ctx = cfg_inputs()
    refs = [reference("k1", 1), reference("k2", 2, 0.5), reference("k3", 3, 2.0)]
    a = run(unet, x, t, ctx, make_fabric(unet, refs, refs[:1]))
    b = run(unet, x, t, ctx, make_fabric(unet, refs[::-1], refs[:1]))
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_per_image_weight_matters(unet):
    x, t, ctx = cfg_inputs()
    a = run(unet, x, t, ctx, make_fabric(unet, [reference("k1", 1, 1.0), reference("k2", 2, 1.0)]))
    b = run(unet, x, t, ctx, make_fabric(unet, [reference("k1", 1, 1.0), reference("k2", 2, 3.0)]))
    assert not torch.allclose(a[:1], b[:1])


def test_recorded_states_are_the_attn1_inputs(unet):
    """The reference pass records norm1's output, i.e. exactly what attn1 receives."""
    refs = [reference("k1", 1)]
    x, t, ctx = cfg_inputs()
    fab = make_fabric(unet, refs, rows=lambda n: [LIKED] * n)
    seen = []
    blocks = [m for m in unet.modules() if hasattr(m, "attn1") and hasattr(m, "norm1")]
    handles = [b.norm1.register_forward_hook(lambda m, i, o: seen.append(o.clone())) for b in blocks]
    try:
        with fab, torch.no_grad():
            recorded = fab._reference_pass(LIKED, x[:1], t)
    finally:
        for h in handles:
            h.remove()
    assert len(recorded) == len(blocks)
    for got, expected in zip(recorded, seen):
        assert torch.equal(got, expected)


def test_reference_pass_stops_after_the_last_attn1(unet):
    calls = []
    handle = unet.out.register_forward_hook(lambda *a: calls.append(1))
    try:
        x, t, ctx = cfg_inputs()
        run(unet, x, t, ctx, make_fabric(unet, LIKED_REFS, DISLIKED_REFS))
    finally:
        handle.remove()
    assert calls == [1]  # the main pass only


def test_reference_batches_give_the_same_states(unet):
    x, t, ctx = cfg_inputs()
    refs = [reference(f"r{i}", i) for i in range(5)]
    a = run(unet, x, t, ctx, make_fabric(unet, refs, reference_batch=5, fuse_reference_rows=False))
    fab = make_fabric(unet, refs, reference_batch=2, fuse_reference_rows=False)
    b = run(unet, x, t, ctx, fab)
    assert fab.reference_passes == 3 + 0  # only the liked set has references
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_out_of_memory_retries_with_smaller_reference_chunks(unet, monkeypatch):
    x, t, ctx = cfg_inputs()
    refs = [reference(f"r{i}", i) for i in range(4)]
    expected = run(unet, x, t, ctx, make_fabric(unet, refs, fuse_reference_rows=False))
    fab = make_fabric(unet, refs, reference_batch=4, fuse_reference_rows=False)
    real = fab._run_reference_chunks

    def tight_memory(z, t_ref, kwargs, batch):
        if batch > 1:
            raise torch.OutOfMemoryError("simulated")
        return real(z, t_ref, kwargs, batch)

    monkeypatch.setattr(fab, "_run_reference_chunks", tight_memory)
    out = run(unet, x, t, ctx, fab)
    assert fab.failure is None and fab.reference_batch == 1
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_token_budget_bounds_reference_keys(unet):
    x, t, ctx = cfg_inputs()
    refs = [reference(f"r{i}", i) for i in range(4)]
    fab = make_fabric(unet, refs, token_budget=64, rows=lambda n: [LIKED] * n)
    with fab, torch.no_grad():
        plan, _ = fab._make_plan((x, t), {})  # no context: separate passes, recorded states
    sizes = [layer[LIKED].hidden.shape[1] for layer in plan.layers]
    assert max(sizes) <= 64 and sizes[0] < 4 * 16 * 16
    out = run(unet, x, t, ctx, make_fabric(unet, refs, token_budget=64))
    full = run(unet, x, t, ctx, make_fabric(unet, refs))
    vanilla = run(unet, x, t, ctx)
    # pooled feedback is an approximation of full feedback, much closer to it than to no feedback
    assert (out - full).norm() < 0.5 * (full - vanilla).norm()


@pytest.mark.parametrize("fuse", [True, False], ids=["in the call", "separate calls"])
def test_token_budget_runs_the_same_unet_calls_as_no_budget(unet, fuse):
    """The budget pools the recorded tokens, which makes the attention cheaper; it never adds
    reference calls or splits them into smaller ones (that made 8+8 1.8x slower in a real webui)."""
    x, t, ctx = cfg_inputs()
    refs = [reference(f"r{i}", i) for i in range(3)]
    calls = {}
    for budget in (0, 64):
        rows = []
        hook = unet.input_blocks[0].register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
        try:
            fab = make_fabric(unet, refs, token_budget=budget, rows=lambda n: [LIKED] * n, fuse_reference_rows=fuse)
            run(unet, x, t, ctx, fab)
        finally:
            hook.remove()
        calls[budget] = (rows, fab.fused_calls, fab.reference_calls)
    assert calls[64] == calls[0]
    assert calls[0] == (([2 + 3], 1, 0) if fuse else ([3, 2], 0, 1))


def test_fractional_timesteps_and_half_precision_autocast(unet):
    """The webui samples under autocast; k-diffusion passes fractional timesteps."""
    x, t, ctx = cfg_inputs(t=613.37)
    fab = make_fabric(unet, LIKED_REFS, DISLIKED_REFS)
    with fab, torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = unet(x, t, context=ctx)
    assert fab.failure is None and fab.calls_with_feedback == 1
    full = run(unet, x, t, ctx, make_fabric(unet, LIKED_REFS, DISLIKED_REFS))
    vanilla = run(unet, x, t, ctx)
    assert (out.float() - full).norm() < 0.2 * (full - vanilla).norm()


def test_sgm_blocks_with_keyword_calls_and_y():
    unet = with_sgm_blocks(small_unet(seed=3, y=True))
    from imaginairy.modules.sgm.attention import CrossAttention as SgmCrossAttention

    layers = fabric.engine.layers.self_attention_layers(unet)
    assert len(layers) == 7 and all(isinstance(m, SgmCrossAttention) for _, m in layers)
    before = module_snapshot(unet)
    x, t, ctx = cfg_inputs()
    y = torch.randn(2, 1)
    with torch.no_grad():
        vanilla = unet(x, timesteps=t, context=ctx, y=y)
        fab = make_fabric(unet, LIKED_REFS, DISLIKED_REFS)
        fab.reference_kwargs["y"] = torch.zeros(1, 1)
        with fab:
            out = unet(x, timesteps=t, context=ctx, y=y)
        separate = make_fabric(unet, LIKED_REFS, DISLIKED_REFS, fuse_reference_rows=False)
        separate.reference_kwargs["y"] = torch.zeros(1, 1)
        with separate:
            expected = unet(x, timesteps=t, context=ctx, y=y)
        nothing = make_fabric(unet, [], [])
        with nothing:
            same = unet(x, timesteps=t, context=ctx, y=y)
    assert fab.reference_passes == 2 and (out - vanilla).abs().max() > 1e-3
    assert fab.fused_calls == 1 and separate.fused_calls == 0  # y extended with the references' y
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(same, vanilla)
    assert_same_snapshot(before, module_snapshot(unet))


def test_inpainting_unet_takes_extra_reference_channels():
    unet = small_unet(seed=4, in_channels=9)
    x, t, ctx = cfg_inputs()
    x = torch.cat([x, torch.ones(2, 5, 16, 16)], dim=1)
    vanilla = run(unet, x, t, ctx)
    missing = make_fabric(unet, LIKED_REFS, on_failure=lambda e: None)
    assert torch.equal(run(unet, x, t, ctx, missing), vanilla)
    assert "input channels" in str(missing.failure)
    fab = make_fabric(unet, LIKED_REFS, reference_concat=lambda h, w: torch.ones(1, 5, h, w))
    out = run(unet, x, t, ctx, fab)
    assert not torch.allclose(out, vanilla) and fab.failure is None and fab.fused_calls == 1
    separate = make_fabric(unet, LIKED_REFS, reference_concat=lambda h, w: torch.ones(1, 5, h, w),
                           fuse_reference_rows=False)
    torch.testing.assert_close(out, run(unet, x, t, ctx, separate), rtol=1e-5, atol=1e-5)


def test_full_size_sd15_unet_smoke():
    unet = sd15_unet()
    assert len(fabric.engine.layers.self_attention_layers(unet)) == 16
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g).repeat(2, 1, 1, 1)
    ctx = torch.randn(2, 77, 768, generator=g)
    t = torch.full((2,), 500.0)
    refs = [reference("a", 1), reference("b", 2)]
    with torch.no_grad():
        vanilla = unet(x, t, context=ctx)
        fab = fabric.Fabric(
            unet,
            references={LIKED: refs[:1], DISLIKED: refs[1:]},
            schedule=Schedule(),
            alphas_cumprod=__import__("engine_support").alphas_cumprod(),
            reference_kwargs={"context": torch.zeros(1, 77, 768)},
        )
        with fab:
            out = unet(x, t, context=ctx)
    assert fab.reference_passes == 2 and torch.isfinite(out).all()
    assert (out - vanilla).abs().max() > 1e-3
