"""Property-based fuzzing of FABRIC's API payloads and of the feedback store (hypothesis).

Properties:
- parse_script_args, whatever it is given, returns settings or raises FabricInputError, nothing
  else; a rejected payload leaves the store byte for byte as it was; an accepted one refers only
  to images that are in the store.
- The HTTP-edge check never raises and never writes.
- Any sequence of store operations, with disk failures injected, raises only FabricInputError
  (bad input) or FabricStoreError (an injected failure), agrees with a model of the store, and
  never leaves a temporary or partial file; a failed write changes nothing.

The counts are printed in pytest's terminal summary ("fuzz: ..."). FABRIC_FUZZ_EXAMPLES=2000 runs
deeper than the default 200 examples per property.
"""
from __future__ import annotations

import base64
import errno
import json
import os
import shutil
import tempfile
import unicodedata
from collections import Counter
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fabric.feedback import store as store_module
from fabric.feedback.api import FabricRequestValidation
from fabric.errors import FabricInputError, FabricStoreError
from fabric.feedback.images import image_id
from fabric.feedback.settings import POSITIONAL_ORDER, FabricSettings, Limits, parse_script_args
from fabric.feedback.store import FeedbackStore

from payload_support import encode, picture, temp_files, tree

FUZZ = settings(
    max_examples=int(os.environ.get("FABRIC_FUZZ_EXAMPLES", "200")),  # raise it for a deeper run
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
LIMITS = Limits(max_images_per_set=4, max_pixels=64 * 64, max_image_bytes=64 * 1024, max_request_bytes=1 << 20)
COUNTS: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def report(summary_lines):
    yield
    summary_lines.append(
        f"fuzz: {COUNTS['payloads']} payloads ({COUNTS['accepted']} accepted, {COUNTS['rejected']} rejected, "
        f"{COUNTS['stored']} inline images stored), "
        f"{COUNTS['edge']} HTTP-edge bodies, {COUNTS['store_ops']} store ops ({COUNTS['faults']} injected disk "
        f"faults), {COUNTS['crashes']} crashes, {COUNTS['partial']} partial files"
    )


@pytest.fixture(scope="module")
def workdir():
    path = Path(tempfile.mkdtemp(prefix="fabric-fuzz-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- strategies ----------------------------------------------------------------------------------

KNOWN = [picture(i, size=(6, 5)) for i in range(3)]
KNOWN_IDS = [image_id(p) for p in KNOWN]
SMALL_PNGS = [encode(picture(10 + i, size=(4 + i, 3))) for i in range(4)]

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def image_bytes(draw):
    kind = draw(st.sampled_from(["random", "png", "mutated", "truncated", "other-format"]))
    if kind == "random":
        return draw(st.binary(max_size=200))
    png = draw(st.sampled_from(SMALL_PNGS))
    if kind == "png":
        return png
    if kind == "truncated":
        return png[: draw(st.integers(0, len(png) - 1))]
    if kind == "other-format":
        return encode(picture(draw(st.integers(0, 5))), draw(st.sampled_from(["BMP", "GIF", "JPEG", "TIFF", "PPM"])))
    data = bytearray(png)
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def image_text(draw):
    data = draw(image_bytes())
    text = base64.b64encode(data).decode()
    wrap = draw(st.sampled_from(["plain", "data-url", "bad-data-url", "garbled", "no-padding"]))
    if wrap == "data-url":
        return "data:image/png;base64," + text
    if wrap == "bad-data-url":
        return draw(st.sampled_from(["data:text/plain;base64,", "data:image/png,", "data:"])) + text
    if wrap == "garbled" and text:
        i = draw(st.integers(0, len(text) - 1))
        return text[:i] + draw(st.sampled_from(["!", " ", "\x00", "é", "=", "-"])) + text[i + 1 :]
    if wrap == "no-padding":
        return text.rstrip("=")
    return text


image_refs = st.one_of(
    image_text(),
    st.sampled_from(KNOWN_IDS),
    st.text("0123456789abcdef", min_size=16, max_size=16),  # unknown ids (almost always)
    st.sampled_from(["/etc/passwd", "../x.png", "C:\\x.png", "http://127.0.0.1/x.png", "file:///etc/passwd", "~/x"]),
    json_values,
)
weights = st.one_of(st.floats(-1, 5), st.integers(-2, 6), st.sampled_from([float("nan"), float("inf")]), json_values)
entries = st.one_of(
    image_refs,
    st.fixed_dictionaries({"image": image_refs}, optional={"weight": weights}),
    st.fixed_dictionaries({"id": image_refs}, optional={"weight": weights}),
    st.dictionaries(st.sampled_from(["image", "id", "weight", "wieght", "x"]), image_refs | weights, max_size=3),
)
image_sets = st.one_of(st.lists(entries, max_size=6), json_values)
units = st.one_of(st.floats(-0.5, 1.5), st.floats(), st.integers(-2, 2), json_values)

SLOTS = {
    "enabled": st.booleans() | json_values,
    "liked": image_sets,
    "disliked": image_sets,
    "strength": units,
    "start": units,
    "end": units,
    "min_strength": units,
    "neg_scale": units,
    "hires": st.booleans() | json_values,
    "token_budget": st.integers(-10, 2_000_000) | st.floats() | json_values,
    "prompt_dropout": st.floats(-0.5, 1.5) | json_values,
}


valid_refs = st.one_of(
    st.sampled_from(KNOWN_IDS),
    st.sampled_from(SMALL_PNGS).map(lambda b: base64.b64encode(b).decode()),
    st.sampled_from(SMALL_PNGS).map(lambda b: "data:image/png;base64," + base64.b64encode(b).decode()),
)
valid_entries = valid_refs | st.fixed_dictionaries({"image": valid_refs, "weight": st.floats(0, 4)})


@st.composite
def near_valid_args(draw):
    """A valid named payload with inline pictures, often with one slot spoiled."""
    start = draw(st.floats(0, 1))
    named = {
        "enabled": draw(st.booleans()),
        "liked": draw(st.lists(valid_entries, max_size=LIMITS.max_images_per_set)),
        "disliked": draw(st.lists(valid_entries, max_size=LIMITS.max_images_per_set)),
        "strength": draw(st.floats(0, 1)),
        "start": start,
        "end": draw(st.floats(start, 1)),
        "token_budget": draw(st.integers(0, 10_000)),
        "prompt_dropout": draw(st.floats(0, 1)),
    }
    if draw(st.booleans()):
        slot = draw(st.sampled_from(POSITIONAL_ORDER))
        named[slot] = draw(SLOTS[slot])
    if draw(st.booleans()):
        return [named[n] if n in named else None for n in POSITIONAL_ORDER]
    return [named]


@st.composite
def script_args(draw):
    form = draw(st.sampled_from(["named", "positional", "junk", "near-valid", "near-valid"]))
    if form == "near-valid":
        return draw(near_valid_args())
    if form == "junk":
        return draw(json_values)
    if form == "named":
        keys = draw(st.lists(st.sampled_from(POSITIONAL_ORDER), unique=True))
        named = {k: draw(SLOTS[k]) for k in keys}
        if draw(st.integers(0, 9)) == 0:
            named[draw(st.text(max_size=12))] = draw(json_values)
        args = [named]
        if draw(st.integers(0, 9)) == 0:
            args.append(draw(json_values))
        return args
    n = draw(st.integers(0, len(POSITIONAL_ORDER) + 2))
    return [draw(SLOTS[POSITIONAL_ORDER[i]]) if i < len(POSITIONAL_ORDER) else draw(json_values) for i in range(n)]


def fresh_store(workdir: Path, name: str) -> FeedbackStore:
    root = workdir / name
    shutil.rmtree(root, ignore_errors=True)
    store = FeedbackStore(root)
    for pic in KNOWN:
        store.add(pic)
    return store


def check_no_partial_files(root: Path) -> None:
    leftovers = temp_files(root)
    COUNTS["partial"] += len(leftovers)
    assert leftovers == []


# -- payloads --------------------------------------------------------------------------------------


@FUZZ
@given(args=script_args(), prefixed=st.booleans())
def test_fuzz_script_args(workdir, args, prefixed):
    store = fresh_store(workdir, "payloads")
    before = tree(store.root)
    COUNTS["payloads"] += 1
    prefix = "alwayson_scripts.FABRIC.args" if prefixed else None
    try:
        result = parse_script_args(args, store=store, limits=LIMITS, field_prefix=prefix)
    except FabricInputError as exc:
        COUNTS["rejected"] += 1
        assert exc.field and exc.message and str(exc) == f"{exc.field}: {exc.message}"
        if prefixed:
            assert exc.field.startswith(prefix)
        assert tree(store.root) == before, "a rejected payload changed the store"
    except Exception:
        COUNTS["crashes"] += 1
        raise
    else:
        COUNTS["accepted"] += 1
        COUNTS["stored"] += len(tree(store.root)) - len(before)
        assert isinstance(result, FabricSettings)
        for image in result.liked + result.disliked:
            assert store.has(image.id)
            assert 0 <= image.weight <= 4
        assert 0 <= result.start <= result.end <= 1
    check_no_partial_files(store.root)


@FUZZ
@given(args=script_args(), key=st.sampled_from(["FABRIC", "fabric", "Fabric"]), shape=st.sampled_from(["ok", "raw"]),
       junk=json_values)
def test_fuzz_http_edge_check(workdir, args, key, shape, junk):
    store = fresh_store(workdir, "edge")
    before = tree(store.root)
    check = FabricRequestValidation(None, lambda: store, lambda: LIMITS)
    if shape == "ok":
        document = {"prompt": "x", "alwayson_scripts": {key: {"args": args}}}
    else:
        document = {"alwayson_scripts": {key: junk}} if isinstance(junk, (dict, list)) else junk
    try:
        body = json.dumps(document).encode()
    except (ValueError, TypeError):  # pragma: no cover - json_values are all serialisable
        return
    COUNTS["edge"] += 1
    try:
        problem = check.check(body)
    except Exception:
        COUNTS["crashes"] += 1
        raise
    assert problem is None or (isinstance(problem, FabricInputError) and problem.field.startswith("alwayson_scripts."))
    after = tree(store.root)
    if problem is not None:
        assert after == before, "a refused payload changed the store"
    else:  # a valid payload's inline images are stored, as its job would store them; nothing else
        assert {k: v for k, v in after.items() if k in before} == before
        assert all(k.startswith("images/") and k.endswith(".png") for k in after.keys() - before.keys())


# -- store operations ----------------------------------------------------------------------------

names = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["../../etc/passwd", "..", "/", "a\x00b", "\u202eevil", "p", "q", "x" * 101, "名前"]),
)
ids = st.one_of(st.sampled_from(KNOWN_IDS + [image_id(picture(20 + i, size=(5, 5))) for i in range(3)]), st.text(max_size=18))
faults = st.sampled_from([None, None, None, "replace", "fsync", "mkstemp", "unlink"])
ops = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 5), faults),
    st.tuples(st.just("get"), ids),
    st.tuples(st.just("has"), ids),
    st.tuples(st.just("delete"), ids, faults),
    st.tuples(st.just("list")),
    st.tuples(st.just("save"), names, st.lists(st.fixed_dictionaries({"id": ids, "weight": st.floats(-1, 5)}), max_size=3), faults),
    st.tuples(st.just("load"), names),
    st.tuples(st.just("drop"), names, faults),
    st.tuples(st.just("prune"), st.lists(ids, max_size=2), faults),
)


def injected(fault):
    if fault is None:
        return mock.patch.object(store_module, "_fsync_folder", store_module._fsync_folder)  # no-op patch
    error = OSError(errno.ENOSPC if fault != "unlink" else errno.EROFS, "injected")
    if fault == "mkstemp":
        return mock.patch.object(store_module.tempfile, "mkstemp", side_effect=error)
    if fault == "unlink":
        return mock.patch.object(Path, "unlink", side_effect=error)
    return mock.patch.object(store_module.os, fault, side_effect=error)


def picture_for(k: int):
    return KNOWN[k] if k < 3 else picture(20 + k - 3, size=(5, 5))


@FUZZ
@given(sequence=st.lists(ops, max_size=12))
def test_fuzz_store_operations(workdir, sequence):
    store = fresh_store(workdir, "ops")
    model_images = set(KNOWN_IDS)
    model_presets: dict[str, dict] = {}
    for op in sequence:
        COUNTS["store_ops"] += 1
        kind, fault = op[0], (op[-1] if op[0] in ("add", "delete", "save", "drop", "prune") else None)
        before = tree(store.root)
        if fault:
            COUNTS["faults"] += 1
        try:
            with injected(fault):
                result = run_op(store, op)
        except FabricStoreError:
            assert fault, f"{op}: a store error without an injected fault"
            assert tree(store.root) == before, f"{op}: a failed write changed the store"
        except FabricInputError:
            pass
        except Exception:
            COUNTS["crashes"] += 1
            raise
        else:
            update_model(op, result, model_images, model_presets)
        check_no_partial_files(store.root)
        assert {e["id"] for e in store.list()} == model_images
        assert {p["name"]: {"liked": p["liked"], "disliked": p["disliked"]} for p in store.list_presets()} == model_presets
    # nothing ever lands outside images/ and presets/
    assert all(Path(f).parts[0] in ("images", "presets") for f in tree(store.root))


def run_op(store: FeedbackStore, op):
    kind = op[0]
    if kind == "add":
        return store.add(picture_for(op[1]))
    if kind == "get":
        img = store.get(op[1])
        assert image_id(img) == op[1]
        return img
    if kind == "has":
        return store.has(op[1])
    if kind == "delete":
        return store.delete(op[1])
    if kind == "list":
        return store.list()
    if kind == "save":
        return store.save_preset(op[1], op[2], [])
    if kind == "load":
        return store.load_preset(op[1])
    if kind == "drop":
        return store.delete_preset(op[1])
    if kind == "prune":
        return store.prune(keep=op[1])
    raise AssertionError(kind)


def update_model(op, result, images: set, presets: dict):
    kind = op[0]
    if kind == "add":
        images.add(result)
    elif kind == "delete":
        images.discard(op[1])
    elif kind == "save":
        presets[result["name"]] = {"liked": result["liked"], "disliked": result["disliked"]}
    elif kind == "drop":
        presets.pop(unicodedata.normalize("NFC", op[1]), None)
    elif kind == "prune":
        images.difference_update(result)
    elif kind == "has":
        assert result == (op[1] in images)
    elif kind == "load":
        assert presets[unicodedata.normalize("NFC", op[1])] == {"liked": result["liked"], "disliked": result["disliked"]}


def test_fuzz_found_nothing_broken():
    # runs after the fuzz tests in this module (pytest keeps file order)
    assert COUNTS["crashes"] == 0 and COUNTS["partial"] == 0
    assert COUNTS["payloads"] > 0 and COUNTS["store_ops"] > 0
