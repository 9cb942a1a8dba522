"""fabric/feedback/store.py: the content-addressed feedback store and its presets."""
import errno
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from fabric.feedback import store as store_module
from fabric.errors import FabricInputError, FabricNotFoundError, FabricStoreError
from fabric.feedback.images import image_id
from fabric.feedback.store import FeedbackStore, check_preset_name

from payload_support import encode, picture, png_claiming, temp_files, tree


@pytest.fixture
def store(tmp_path):
    return FeedbackStore(tmp_path / "fabric-store")


# -- images --------------------------------------------------------------------------------------


def test_add_stores_a_png_named_by_the_pixel_id_and_get_returns_the_pixels(store):
    img = picture(1)
    ident = store.add(img)
    assert ident == image_id(img)
    path = store.root / "images" / f"{ident}.png"
    assert path.read_bytes().startswith(b"\x89PNG")
    back = store.get(ident)
    assert back.mode == "RGB" and back.tobytes() == img.tobytes()
    assert store.has(ident)


def test_add_converts_to_rgb(store):
    rgba = Image.new("RGBA", (3, 3), (255, 0, 0, 0))
    ident = store.add(rgba)
    assert store.get(ident).getpixel((0, 0)) == (255, 255, 255)
    assert ident == image_id(Image.new("RGB", (3, 3), (255, 255, 255)))


def test_add_deduplicates_without_rewriting(store, monkeypatch):
    ident = store.add(picture(2))
    before = os.stat(store.root / "images" / f"{ident}.png")
    writes = []
    monkeypatch.setattr(store, "_write_atomic", lambda *a: writes.append(a))
    assert store.add(picture(2)) == ident
    assert store.add(picture(2).convert("RGBA")) == ident
    assert writes == []
    after = os.stat(store.root / "images" / f"{ident}.png")
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert len(store.list()) == 1


def test_add_repairs_a_damaged_copy(store):
    ident = store.add(picture(3))
    path = store.root / "images" / f"{ident}.png"
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(FabricInputError, match="damaged"):
        store.get(ident)
    assert store.add(picture(3)) == ident
    assert store.get(ident).tobytes() == picture(3).tobytes()


@pytest.mark.parametrize(
    "bad",
    ["../../etc/passwd", "..", "/", "", "ABCDEF0123456789", "0123", "0123456789abcdeg",
     "0123456789abcdef.png", "0123456789abcdef\n", "0123456789abcdef/..", 5, None, b"0123456789abcdef"],
)
def test_malformed_ids_are_refused_before_touching_the_disk(store, bad, monkeypatch):
    def no_fs(*a, **k):
        raise AssertionError("the filesystem was touched")

    for name in ("read_bytes", "unlink", "stat", "is_file", "exists", "open"):
        monkeypatch.setattr(Path, name, no_fs)
    for call in (store.get, store.delete, store.png_bytes):
        with pytest.raises(FabricInputError) as info:
            call(bad)
        assert info.value.field == "id" and "not an image id" in info.value.message
        assert not isinstance(info.value, FabricNotFoundError)
    assert store.has(bad) is False


def test_unknown_id(store):
    with pytest.raises(FabricNotFoundError, match="no image with id 0123456789abcdef"):
        store.get("0123456789abcdef")
    with pytest.raises(FabricNotFoundError):
        store.delete("0123456789abcdef")
    with pytest.raises(FabricNotFoundError):
        store.png_bytes("0123456789abcdef")
    assert not store.has("0123456789abcdef")


def test_corrupt_and_swapped_files_are_reported(store):
    a, b = store.add(picture(4)), store.add(picture(5))
    folder = store.root / "images"
    (folder / f"{a}.png").write_bytes(b"not a png at all")
    with pytest.raises(FabricInputError, match=f"stored image {a} is damaged"):
        store.get(a)
    # a valid PNG of other pixels under this id
    (folder / f"{b}.png").write_bytes(encode(picture(6)))
    with pytest.raises(FabricInputError, match="damaged"):
        store.get(b)
    # a directory where a file should be
    c = image_id(picture(7))
    (folder / f"{c}.png").mkdir()
    with pytest.raises(FabricInputError):
        store.get(c)


def test_a_bomb_planted_in_the_store_is_refused(store):
    ident = "00000000000000aa"
    store.images_dir.mkdir(parents=True)
    (store.images_dir / f"{ident}.png").write_bytes(png_claiming(50000, 50000))
    with pytest.raises(FabricInputError, match="damaged"):
        store.get(ident)


def test_list_reports_each_image(store):
    ids = [store.add(picture(i, size=(4 + i, 3))) for i in range(3)]
    (store.images_dir / ".tmp-abc.part").write_bytes(b"half")
    (store.images_dir / "notes.txt").write_text("foreign file")
    (store.images_dir / "0123456789ABCDEF.png").write_bytes(b"wrong case")
    listed = store.list()
    assert sorted(e["id"] for e in listed) == sorted(ids)
    for entry in listed:
        i = ids.index(entry["id"])
        assert (entry["width"], entry["height"]) == (4 + i, 3)
        assert entry["bytes"] == (store.images_dir / f"{entry['id']}.png").stat().st_size
        assert isinstance(entry["mtime"], float)


def test_list_of_a_damaged_file_has_no_size(store):
    ident = store.add(picture(1))
    (store.images_dir / f"{ident}.png").write_bytes(b"junk")
    assert store.list() == [{"id": ident, "width": None, "height": None, "bytes": 4, "mtime": store.list()[0]["mtime"]}]


def test_files_deleted_behind_the_stores_back(store):
    a, b = store.add(picture(1)), store.add(picture(2))
    (store.images_dir / f"{a}.png").unlink()
    assert [e["id"] for e in store.list()] == [b]
    assert not store.has(a)
    with pytest.raises(FabricNotFoundError):
        store.get(a)
    # the whole folder gone
    for path in store.images_dir.iterdir():
        path.unlink()
    store.images_dir.rmdir()
    assert store.list() == []
    with pytest.raises(FabricNotFoundError):
        store.get(b)
    assert store.add(picture(2)) == b  # and the store recovers


def test_delete(store):
    a = store.add(picture(1))
    store.delete(a)
    assert not store.has(a) and store.list() == []


def test_a_missing_root_is_an_empty_store(tmp_path):
    store = FeedbackStore(tmp_path / "not" / "yet")
    assert store.list() == [] and store.list_presets() == [] and store.prune() == []
    assert not (tmp_path / "not").exists()


# -- atomicity and disk failures -------------------------------------------------------------------


def _fail(exc):
    def raiser(*a, **k):
        raise exc

    return raiser


FAILURES = {
    "replace-enospc": ("replace", OSError(errno.ENOSPC, "No space left on device"), "full"),
    "fsync-eio": ("fsync", OSError(errno.EIO, "Input/output error"), "could not write"),
    "replace-erofs": ("replace", OSError(errno.EROFS, "Read-only file system"), "not writable"),
    "mkstemp-eacces": ("mkstemp", PermissionError(errno.EACCES, "Permission denied"), "not writable"),
}


@pytest.mark.parametrize("name", FAILURES)
def test_a_failed_image_write_leaves_no_file_and_the_old_state(store, monkeypatch, name):
    keep = store.add(picture(1))
    before = tree(store.root)
    where, exc, words = FAILURES[name]
    target = store_module.tempfile if where == "mkstemp" else store_module.os
    monkeypatch.setattr(target, where, _fail(exc))
    with pytest.raises(FabricStoreError) as info:
        store.add(picture(2))
    assert words in str(info.value) and "nothing was changed" in str(info.value)
    monkeypatch.undo()
    assert tree(store.root) == before
    assert temp_files(store.root) == []
    assert [e["id"] for e in store.list()] == [keep]


@pytest.mark.parametrize("name", FAILURES)
def test_a_failed_preset_write_keeps_the_old_preset(store, monkeypatch, name):
    a, b = store.add(picture(1)), store.add(picture(2))
    store.save_preset("mine", [{"id": a, "weight": 1.0}], [])
    before = tree(store.root)
    where, exc, words = FAILURES[name]
    target = store_module.tempfile if where == "mkstemp" else store_module.os
    monkeypatch.setattr(target, where, _fail(exc))
    with pytest.raises(FabricStoreError, match=words):
        store.save_preset("mine", [{"id": b, "weight": 2.0}], [{"id": a, "weight": 1.0}])
    monkeypatch.undo()
    assert tree(store.root) == before
    assert store.load_preset("mine")["liked"] == [{"id": a, "weight": 1.0}]


def test_an_interrupted_write_removes_its_temp_file(store, monkeypatch):
    monkeypatch.setattr(store_module.os, "fsync", _fail(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        store.add(picture(1))
    monkeypatch.undo()
    assert temp_files(store.root) == [] and store.list() == []


def test_a_write_that_fails_midway_leaves_nothing(store, monkeypatch):
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(FabricStoreError, match="full"):
        store.add(picture(1))
    monkeypatch.undo()
    assert tree(store.root) == {}


def test_a_read_only_store_directory(store, tmp_path):
    ident = store.add(picture(1))
    store.save_preset("p", [{"id": ident, "weight": 1}], [])
    before = tree(store.root)
    for folder in (store.images_dir, store.presets_dir):
        folder.chmod(0o555)
    try:
        probe = store.images_dir / "probe"
        try:
            probe.write_bytes(b"")
            probe.unlink()
            pytest.skip("chmod does not stop this user (root): the monkeypatched failures cover it")
        except PermissionError:
            pass
        with pytest.raises(FabricStoreError, match="not writable"):
            store.add(picture(2))
        with pytest.raises(FabricStoreError, match="not writable"):
            store.save_preset("p", [], [])
        with pytest.raises(FabricStoreError, match="not writable"):
            store.delete(ident)
        assert store.get(ident).tobytes() == picture(1).tobytes()
    finally:
        for folder in (store.images_dir, store.presets_dir):
            folder.chmod(0o755)
    assert tree(store.root) == before


def test_a_failed_delete_changes_nothing(store, monkeypatch):
    ident = store.add(picture(1))
    monkeypatch.setattr(Path, "unlink", _fail(PermissionError(errno.EACCES, "Permission denied")))
    with pytest.raises(FabricStoreError, match="not writable"):
        store.delete(ident)
    monkeypatch.undo()
    assert store.has(ident)


def test_stale_temp_files_are_swept_young_ones_kept(store):
    store.images_dir.mkdir(parents=True)
    old, young = store.images_dir / ".tmp-old.part", store.images_dir / ".tmp-young.part"
    old.write_bytes(b"x")
    young.write_bytes(b"y")
    past = time.time() - 2 * 3600
    os.utime(old, (past, past))
    store.add(picture(1))
    assert not old.exists() and young.exists()


# -- concurrency ---------------------------------------------------------------------------------


def test_concurrent_adds_from_threads(store):
    pictures = [picture(i % 5, size=(16, 16)) for i in range(40)]
    results, errors = [None] * len(pictures), []
    barrier = threading.Barrier(8)

    def work(k):
        barrier.wait()
        try:
            for i in range(k, len(pictures), 8):
                results[i] = store.add(pictures[i])
                store.list()
                assert store.get(results[i]).tobytes() == pictures[i].tobytes()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [image_id(p) for p in pictures]
    assert sorted(e["id"] for e in store.list()) == sorted(set(results))
    assert temp_files(store.root) == []


def test_two_stores_on_one_folder_adding_the_same_image(tmp_path):
    # two processes (or two store objects) have separate locks: the atomic rename keeps it safe
    stores = [FeedbackStore(tmp_path), FeedbackStore(tmp_path)]
    barrier = threading.Barrier(2)
    out = []

    def work(s):
        barrier.wait()
        for _ in range(10):
            out.append(s.add(picture(9, size=(32, 32))))

    threads = [threading.Thread(target=work, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(out) == {image_id(picture(9, size=(32, 32)))}
    assert stores[0].get(out[0]).tobytes() == picture(9, size=(32, 32)).tobytes()
    assert temp_files(tmp_path) == []


# -- presets -------------------------------------------------------------------------------------

NAMES = [
    "../../etc/passwd", "..", ".", "/", "a/b\\c", "C:\\Windows", "~", "名前", "emoji 👍🏽 ok",
    "family 👨‍👩‍👧", "שלום", "مرحبا", "mixed עברית and latin", "x" * 100, " spaced ", "a:b*c?d\"<>|",
    "CON", "nul", ".hidden", "name.json", "%2e%2e%2f",
]


@pytest.mark.parametrize("name", NAMES)
def test_any_unicode_name_round_trips_and_stays_inside_the_store(store, tmp_path, name):
    ident = store.add(picture(1))
    saved = store.save_preset(name, [{"id": ident, "weight": 1.5}], [])
    assert saved["name"] == name
    assert store.load_preset(name) == {"name": name, "liked": [{"id": ident, "weight": 1.5}], "disliked": []}
    assert [p["name"] for p in store.list_presets()] == [name]
    # every file is under root, in images/ or presets/, with a hex name
    files = tree(tmp_path)
    assert all(Path(f).parts[0] == "fabric-store" for f in files)
    presets = [f for f in files if Path(f).parts[1] == "presets"]
    assert len(presets) == 1 and len(Path(presets[0]).stem) == 32
    assert all(c in "0123456789abcdef" for c in Path(presets[0]).stem)
    store.delete_preset(name)
    assert store.list_presets() == []


@pytest.mark.parametrize(
    "name, words",
    [
        ("", "empty"),
        ("x" * 101, "at most 100"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("tab\there", "control"),
        ("\x7f", "control"),
        ("line\u2028sep", "control"),
        ("abc\u202etxt.exe", "bidirectional"),
        ("\u2066isolate", "bidirectional"),
        ("\ud800", "surrogate"),
        (5, "must be a string"),
        (None, "must be a string"),
        (b"bytes", "must be a string"),
    ],
)
def test_bad_preset_names(store, name, words):
    for call in (lambda: store.save_preset(name, [], []), lambda: store.load_preset(name),
                 lambda: store.delete_preset(name)):
        with pytest.raises(FabricInputError, match=words) as info:
            call()
        assert info.value.field == "name"
    assert not store.presets_dir.exists()


def test_names_are_compared_in_nfc(store):
    store.save_preset("caf\u00e9", [], [])
    assert store.load_preset("cafe\u0301")["name"] == "caf\u00e9"
    assert check_preset_name("cafe\u0301") == "caf\u00e9"


def test_save_replaces_and_presets_are_listed_by_name(store):
    a, b = store.add(picture(1)), store.add(picture(2))
    store.save_preset("b", [{"id": a, "weight": 1}], [])
    store.save_preset("a", [], [{"id": b, "weight": 0.5}])
    store.save_preset("b", [{"id": b, "weight": 2}], [{"id": a, "weight": 0}])
    listed = store.list_presets()
    assert [p["name"] for p in listed] == ["a", "b"]
    assert listed[1]["liked"] == [{"id": b, "weight": 2.0}] and listed[1]["disliked"] == [{"id": a, "weight": 0.0}]
    assert all(isinstance(p["mtime"], float) for p in listed)


def test_preset_entries_are_checked(store):
    a = store.add(picture(1))
    cases = [
        ([{"id": "0123456789abcdef", "weight": 1}], "liked[0].id", FabricNotFoundError),
        ([{"id": "nope", "weight": 1}], "liked[0].id", FabricInputError),
        ([{"id": a, "weight": 4.5}], "liked[0].weight", FabricInputError),
        ([{"id": a, "weight": float("nan")}], "liked[0].weight", FabricInputError),
        ([{"id": a, "weight": True}], "liked[0].weight", FabricInputError),
        ([{"id": a, "weight": "1"}], "liked[0].weight", FabricInputError),
        ([{"id": a, "colour": 1}], "liked[0]", FabricInputError),
        ("0123456789abcdef", "liked", FabricInputError),
        (None, "liked", FabricInputError),
    ]
    for liked, field, kind in cases:
        with pytest.raises(kind) as info:
            store.save_preset("p", liked, [])
        assert info.value.field == field, (liked, info.value)
    assert store.list_presets() == []


def test_unknown_and_damaged_presets(store):
    with pytest.raises(FabricNotFoundError, match="no preset named 'ghost'"):
        store.load_preset("ghost")
    with pytest.raises(FabricNotFoundError):
        store.delete_preset("ghost")
    store.save_preset("broken", [], [])
    path = next(store.presets_dir.iterdir())
    path.write_text("{not json")
    with pytest.raises(FabricInputError, match="damaged"):
        store.load_preset("broken")
    assert store.list_presets() == []  # unreadable presets are left out of the list
    path.write_text('{"version": 1, "name": "other", "liked": [], "disliked": []}')
    with pytest.raises(FabricNotFoundError):
        store.load_preset("broken")  # the file's name field must match


def test_prune_removes_only_unreferenced_images(store):
    a, b, c, d = (store.add(picture(i)) for i in range(4))
    store.save_preset("p1", [{"id": a, "weight": 1}], [{"id": b, "weight": 1}])
    removed = store.prune(keep=[d])
    assert sorted(removed) == sorted([c])
    assert {e["id"] for e in store.list()} == {a, b, d}
    store.delete_preset("p1")
    assert sorted(store.prune()) == sorted([a, b, d])
    assert store.list() == []


def test_prune_deletes_nothing_when_a_preset_cannot_be_read(store):
    a, b = store.add(picture(1)), store.add(picture(2))
    store.save_preset("good", [{"id": a, "weight": 1}], [])
    store.save_preset("bad", [{"id": b, "weight": 1}], [])
    for path in store.presets_dir.iterdir():
        if b"bad" in path.read_bytes():
            path.write_bytes(b"\xff\xfe garbage")
    with pytest.raises(FabricStoreError, match="nothing was deleted"):
        store.prune()
    assert {e["id"] for e in store.list()} == {a, b}
