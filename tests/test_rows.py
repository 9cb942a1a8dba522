from fabric.engine.rows import RowTracker
from fabric.engine.schedule import DISLIKED as D, LIKED as L


def test_one_call_with_all_rows():
    rows = RowTracker()
    rows.new_layout(2, 4)
    assert rows.take(4) == [L, L, D, D]
    assert rows.take(1) is None  # e.g. another extension calling the UNet: no feedback


def test_chunks_and_and_prompts():
    rows = RowTracker()
    rows.new_layout(3, 5)  # image 0 with two AND sub-prompts, image 1 with one
    assert [rows.take(2), rows.take(2), rows.take(1)] == [[L, L], [L, D], [D]]


def test_skipped_uncond_and_new_step():
    rows = RowTracker()
    rows.new_layout(2, 4)
    assert rows.take(2) == [L, L]  # uncond skipped: never called
    rows.new_layout(2, 4)
    assert rows.take(2) == [L, L] and rows.take(2) == [D, D]
    rows.clear()
    assert rows.take(1) is None
