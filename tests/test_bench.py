"""The benchmark's machinery at a tiny size: the JSON it ends with, and FABRIC-off == vanilla.

No timing assertions: timings on a shared machine are noise.
"""
import contextlib
import io
import json
import math

import pytest

from fabric.bench import engine_bench as bench

ROW_KEYS = {
    "refs_per_set", "batch", "latent", "f", "vanilla_s", "fabric_s", "ratio", "floor",
    "ratio_over_floor", "peak_vanilla_mb", "peak_fabric_mb", "ratio_min", "ratio_median", "ratio_max",
}
ATTENTION_KEYS = {"latent", "layer", "tokens", "channels", "heads", "batch", "refs", "keys", "sdpa_ms", "weighted_ms"}


@pytest.fixture(scope="module")
def result():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        returned = bench.main(
            ["--tiny", "--device", "cpu", "--refs", "1", "2", "--batch", "1", "2", "--extra-refs", "2", "--reps", "3"]
        )
    return returned, out.getvalue()


def test_last_line_is_the_json_result(result):
    returned, out = result
    last = out.strip().splitlines()[-1]
    assert json.loads(last) == returned
    assert returned["device"] == "cpu" and returned["dtype"] == "float32"


def test_rows_have_every_field_and_consistent_numbers(result):
    returned, _ = result
    rows = returned["rows"]
    kinds = [(r["kind"], r["refs_per_set"], r["batch"]) for r in rows]
    assert kinds == [
        ("fabric", 1, 1), ("fabric", 2, 1), ("fabric", 1, 2), ("fabric", 2, 2),
        ("off", 2, 1), ("outside", 2, 1), ("budget", 2, 1),
    ]
    for row in rows:
        assert ROW_KEYS <= row.keys()
        assert row["latent"] == 8 and row["vanilla_s"] > 0 and row["fabric_s"] > 0
        refs_run = 2 * row["refs_per_set"] if row["f"] > 0 else 0
        assert row["floor"] == pytest.approx(1 + row["f"] * refs_run / (2 * row["batch"]))
        assert row["ratio"] == pytest.approx(row["fabric_s"] / row["vanilla_s"])
        assert row["ratio_over_floor"] == pytest.approx(row["ratio"] / row["floor"])
        assert row["ratio_min"] <= row["ratio_median"] <= row["ratio_max"]
        for key in ("peak_vanilla_mb", "peak_fabric_mb"):
            assert row[key] is None or (isinstance(row[key], float) and row[key] > 0)
    # 4 steps from t=999 to 0: progress 0, 1/3, 2/3, 1; the window [0, 0.8] holds 3 of them.
    assert [r["f"] for r in rows] == [0.75] * 4 + [0.0, 0.0, 0.75]


def test_fabric_off_and_outside_the_schedule_match_vanilla(result):
    returned, _ = result
    by_kind = {r["kind"]: r for r in returned["rows"]}
    assert by_kind["off"]["max_abs_diff_vs_vanilla"] == 0.0
    assert by_kind["outside"]["max_abs_diff_vs_vanilla"] == 0.0
    assert by_kind["budget"]["token_budget"] == bench.BUDGET_FACTOR * 8 * 8
    # FABRIC on does change the picture
    assert all(r["max_abs_diff_vs_vanilla"] > 1e-4 for r in returned["rows"] if r["kind"] in ("fabric", "budget"))


def test_attention_rows(result):
    returned, _ = result
    attention = returned["attention"]
    # tiny UNet: attn1 at 1/1, 1/2 and the middle block at 1/4; refs 1, 2; batches 1, 2
    assert len(attention) == 3 * 2 * 2
    for row in attention:
        assert ATTENTION_KEYS <= row.keys()
        assert row["keys"] == row["tokens"] * (1 + row["refs"])
        assert math.isfinite(row["weighted_over_sdpa"])


def test_attn1_shapes_of_sd15():
    shapes = bench.attn1_shapes(bench.SD15_CONFIG, 64)
    assert [(name, tokens, channels, layers) for name, tokens, channels, _, layers in shapes] == [
        ("1/1", 4096, 320, 5), ("1/2", 1024, 640, 5), ("1/4", 256, 1280, 5), ("1/8", 64, 1280, 1),
    ]
    assert sum(s[-1] for s in shapes) == 16


def test_euler_schedule_is_k_diffusion_s():
    alphas = bench.alphas_cumprod()
    sampler = bench.EulerSampler(None, alphas, 5, bench.torch.device("cpu"), bench.torch.float32)
    # the timesteps round-trip through sigma: linspace(999, 0, 5)
    assert sampler.timesteps == pytest.approx([999.0, 749.25, 499.5, 249.75, 0.0], abs=1e-6)
    assert sampler.sigmas[0].item() == pytest.approx(14.6146, rel=1e-4)  # SD1.5's sigma_max
    assert sampler.sigmas[-1].item() == 0.0


def test_host_sdp_attention_matches_ldm_and_is_restored(result):
    import torch
    from ldm.modules.attention import CrossAttention

    assert CrossAttention.__dict__["forward"] is not bench.sdp_attention_forward  # restored after main()
    torch.manual_seed(0)
    self_attn = CrossAttention(query_dim=32, heads=2, dim_head=8).eval()
    cross_attn = CrossAttention(query_dim=32, context_dim=16, heads=2, dim_head=8).eval()
    x, context = torch.randn(2, 10, 32), torch.randn(2, 5, 16)
    with torch.no_grad():
        for attn, ctx in ((self_attn, None), (cross_attn, context)):
            expected = attn(x, context=ctx)
            with bench.host_attention("sdp"):
                assert CrossAttention.forward is bench.sdp_attention_forward
                got = attn(x, context=ctx)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
