"""Fault injection through the real engine on the real ldm UNet.

Every stage where FABRIC can fail (encoding a reference, the reference pass, projecting reference
keys, the weighted attention, out of memory once and for good) is made to fail at the first and
at a later denoising step of a small sampling loop. For each case: no exception escapes, the fault
is reported once, the steps before the fault kept their feedback and the steps after ran without
it, detach leaves every module as it was, and a vanilla run afterwards is bit-identical to one
before. The summary line counts the cases.
"""
import pytest
import torch

import fabric
from engine_support import cfg_inputs, make_fabric, reference, small_unet
from test_engine import assert_same_snapshot, module_snapshot

STEPS = [900.0, 700.0, 500.0, 300.0]  # all inside the default schedule window


def sample(unet, fab=None):
    """A toy CFG loop: each step's output feeds the next input, like a sampler."""
    if fab is not None:
        with fab:
            return sample(unet)
    x, _, ctx = cfg_inputs(batch=2)
    outputs = []
    with torch.no_grad():
        for t_value in STEPS:
            t = torch.full((x.shape[0],), t_value)
            out = unet(x, t, context=ctx)
            outputs.append(out)
            x = x - 0.1 * out
    return outputs


class Fault(Exception):
    pass


def fault_at(stage: str, fab: fabric.Fabric, step: int, counter: dict):
    """Arm `fab` to raise at `stage` from the `step`-th UNet call on."""

    def tripped():
        return counter["calls"] > step  # the counter already includes the current call

    if stage == "encode":
        for name, refs in fab.references.items():
            def broken(h, w, real=refs[0].encode):
                if tripped():
                    raise Fault("encode")
                return real(h, w)
            refs[0] = fabric.Reference(refs[0].key, broken, refs[0].weight)
        fab.latent_cache.clear()
        fab.latent_cache.capacity = 0  # encode at every call, so a later step can fail
    elif stage == "reference pass":
        real = fab._run_reference_chunks

        def broken(*args):
            if tripped():
                raise Fault("reference pass")
            return real(*args)
        fab._run_reference_chunks = broken
    elif stage == "projection":
        real = fab.project_kv

        def broken(module, hidden):
            if tripped() and hidden.shape[0] == 1:  # the reference keys
                raise Fault("projection")
            return real(module, hidden)
        fab.project_kv = broken
    elif stage == "attention":
        import fabric.engine.injection as injection  # the engine's attn1 attends through fabric.engine.injection

        real = injection.weighted_attention

        def broken(*args, **kwargs):
            if tripped():
                raise Fault("attention")
            return real(*args, **kwargs)
        fab._restore = (injection, real)
        injection.weighted_attention = broken
    elif stage in ("out of memory", "out of memory once"):
        real = fab._run_reference_chunks
        state = {"raised": 0}

        def broken(z, t_ref, kwargs, batch):
            if tripped() and (stage == "out of memory" or state["raised"] == 0):
                state["raised"] += 1
                raise torch.OutOfMemoryError("simulated")
            return real(z, t_ref, kwargs, batch)
        fab._run_reference_chunks = broken


STAGES = ["encode", "reference pass", "projection", "attention", "out of memory", "out of memory once"]
CASES = [(stage, step) for stage in STAGES for step in (0, 2)]


@pytest.fixture(scope="module")
def unet():
    return small_unet(seed=5)


@pytest.fixture(scope="module")
def baseline(unet):
    return sample(unet), sample(unet, make_fabric(unet, [reference("l1", 1), reference("l2", 2)], [reference("d1", 3)]))


@pytest.fixture(scope="module")
def tally(summary_lines):
    counts = {"cases": 0, "faults": 0, "escaped": 0, "stray": 0, "changed": 0}
    yield counts
    summary_lines.append(
        f"faults: {counts['cases']} cases over {len(STAGES)} stages, {counts['faults']} faults reported, "
        f"{counts['escaped']} escaped, {counts['stray']} stray attachments, "
        f"{counts['changed']} changed outputs after recovery"
    )


@pytest.mark.parametrize("stage,step", CASES)
def test_fault_never_breaks_the_generation(unet, baseline, tally, stage, step):
    vanilla, with_feedback = baseline
    before = module_snapshot(unet)
    fab = make_fabric(unet, [reference("l1", 1), reference("l2", 2)], [reference("d1", 3)], on_failure=lambda e: None)
    counter = {"calls": 0}
    fab_unet_hook = unet.register_forward_pre_hook(lambda *a: counter.__setitem__("calls", counter["calls"] + 1))
    fault_at(stage, fab, step, counter)
    tally["cases"] += 1
    try:
        try:
            with fab:
                outputs = sample(unet)
        except Exception:  # noqa: BLE001
            tally["escaped"] += 1
            raise
        finally:
            fab_unet_hook.remove()
            if hasattr(fab, "_restore"):
                module, real = fab._restore
                module.weighted_attention = real
        if stage == "out of memory once":
            assert fab.failure is None and fab.reference_batch < 8
            assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(outputs, with_feedback))
        else:
            assert isinstance(fab.failure, (Fault, torch.OutOfMemoryError)), fab.failure
            tally["faults"] += 1
            # before the fault: feedback as usual; from the faulty call on: no feedback
            for i in range(step):
                torch.testing.assert_close(outputs[i], with_feedback[i], rtol=1e-5, atol=1e-5)
            assert not torch.allclose(outputs[step], with_feedback[step], atol=1e-4)
        after = module_snapshot(unet)
        try:
            assert_same_snapshot(before, after)
        except AssertionError:
            tally["stray"] += 1
            raise
        again = sample(unet)
        if not all(torch.equal(a, b) for a, b in zip(again, vanilla)):
            tally["changed"] += 1
            raise AssertionError("vanilla output changed after the fault")
    finally:
        fabric.detach(unet)
