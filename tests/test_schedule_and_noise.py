import torch

from engine_support import alphas_cumprod
from fabric.engine.noise import alpha_bar, noise_seed, noised_latent, reference_noise
from fabric.engine.schedule import DISLIKED, LIKED, Schedule


def test_schedule_window_and_negative_scale():
    s = Schedule(strength=0.8, start=0.2, end=0.6, min_strength=0.1, neg_scale=0.5)
    inside = 999 * (1 - 0.4)
    assert s.weights(inside) == {LIKED: 0.8, DISLIKED: 0.4}
    assert s.weights(999.0) == {LIKED: 0.1, DISLIKED: 0.05}  # progress 0, before start
    assert s.weights(0.0) == {LIKED: 0.1, DISLIKED: 0.05}  # progress 1, after end
    assert s.progress(999.0) == 0.0 and s.progress(0.0) == 1.0


def test_schedule_defaults_are_the_papers():
    s = Schedule()
    assert (s.strength, s.start, s.end, s.min_strength, s.neg_scale) == (0.8, 0.0, 0.8, 0.0, 0.5)
    assert s.weights(100.0) == {LIKED: 0.0, DISLIKED: 0.0}  # progress 0.9: outside, costs nothing


def test_alpha_bar_matches_the_table_at_integer_steps_and_interpolates_log_sigma():
    acp = alphas_cumprod()
    for t in (0, 1, 250, 999):
        assert abs(alpha_bar(acp, t) - acp[t].item()) < 1e-6
    sig = lambda a: ((1 - a) / a) ** 0.5  # noqa: E731
    mid = alpha_bar(acp, 500.5)
    expected_sigma = (sig(acp[500].double()) * sig(acp[501].double())) ** 0.5  # geometric mean
    assert abs(sig(torch.tensor(mid, dtype=torch.float64)) - expected_sigma) < 1e-6


def test_noise_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = reference_noise("abc", 420.25, (4, 8, 8))
    b = reference_noise("abc", 420.25, (4, 8, 8))
    assert torch.equal(a, b)
    assert not torch.equal(a, reference_noise("abd", 420.25, (4, 8, 8)))
    assert not torch.equal(a, reference_noise("abc", 420.5, (4, 8, 8)))
    assert torch.equal(state, torch.get_rng_state())
    assert noise_seed("abc", 1.0) != noise_seed("abc", 2.0)


def test_noised_latent_formula():
    acp = alphas_cumprod()
    latent = torch.randn(4, 6, 6)
    z = noised_latent(latent, "k", 300.0, acp)
    eps = reference_noise("k", 300.0, (4, 6, 6))
    expected = acp[300].sqrt() * latent + (1 - acp[300]).sqrt() * eps
    torch.testing.assert_close(z, expected, rtol=1e-5, atol=1e-5)
