"""fabric/engine/prompt_dropout.py: words dropped by the image's seed, the webui's syntax kept."""
import re

import pytest

from fabric.engine.prompt_dropout import drop_words

PROMPT = "a red fox jumping over the lazy brown dog in deep white snow at dawn"


def test_off_and_empty_prompts_are_left_alone():
    assert drop_words(PROMPT, 0.0, 1) == PROMPT
    assert drop_words("", 0.5, 1) == ""


def test_the_same_seed_drops_the_same_words_and_other_seeds_others():
    assert drop_words(PROMPT, 0.3, 7) == drop_words(PROMPT, 0.3, 7)
    outcomes = {drop_words(PROMPT, 0.3, seed) for seed in range(20)}
    assert len(outcomes) >= 15
    for out in outcomes:  # words are dropped, never changed or reordered
        words = out.split()
        assert words == [w for w in PROMPT.split() if w in words]


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.7])
def test_the_share_of_dropped_words_is_the_rate(rate):
    words = len(PROMPT.split())
    dropped = sum(words - len(drop_words(PROMPT, rate, seed).split()) for seed in range(400))
    share = dropped / (400 * words)
    assert abs(share - rate) < 0.03, share  # 6000 draws: 3 standard deviations are < 0.02


def test_the_webui_syntax_stays_whole():
    prompt = "(red fox:1.2) AND [snow] BREAK <lora:style:0.8> {forest}"
    for seed in range(50):
        out = drop_words(prompt, 1.0, seed)
        assert out == "( :1.2) AND [] BREAK <lora:style:0.8> {}", out
        for opening, closing in ("()", "[]", "{}", "<>"):
            assert out.count(opening) == out.count(closing)
    assert drop_words(PROMPT, 1.0, 3) == ""
    assert not re.search(r"  ", drop_words(PROMPT, 0.5, 3))
