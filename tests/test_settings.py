"""fabric/feedback/settings.py: FABRIC's script arguments in both forms, their errors, and infotext."""
import dataclasses
import json
import math
import re

import pytest

from fabric.errors import FabricInputError, FabricNotFoundError
from fabric.feedback.images import image_id
from fabric.feedback.settings import (
    DEFAULTS,
    INFOTEXT_KEYS,
    FabricSettings,
    FeedbackImage,
    Limits,
    POSITIONAL_ORDER,
    parse_feedback_sets,
    parse_script_args,
    settings_from_infotext,
    settings_to_info_dict,
    settings_to_infotext,
)
from fabric.feedback.store import FeedbackStore

from payload_support import b64, data_url, picture, tree


@pytest.fixture
def store(tmp_path):
    return FeedbackStore(tmp_path / "store")


def parse(args, store, **kw):
    return parse_script_args(args, store=store, **kw)


def test_positional_order_is_the_ui_order():
    # The UI controls are created in this order; API clients that send positional args rely on it.
    assert POSITIONAL_ORDER == (
        "enabled", "liked", "disliked", "strength", "start", "end", "min_strength", "neg_scale", "hires",
        "token_budget", "prompt_dropout",  # new settings go at the end: old positional clients keep working
    )
    assert [f.name for f in dataclasses.fields(FabricSettings)] == list(POSITIONAL_ORDER)


def test_defaults_are_off():
    assert FabricSettings() == FabricSettings(
        enabled=False, liked=(), disliked=(), strength=0.8, start=0.0, end=0.8, min_strength=0.0,
        neg_scale=0.5, hires=False, token_budget=0,
    )
    assert DEFAULTS["enabled"] is False


def test_empty_args_and_nones_give_the_defaults(store):
    assert parse([], store) == FabricSettings()
    assert parse([None] * 10, store) == FabricSettings()
    assert parse([{}], store) == FabricSettings()


@pytest.mark.parametrize("name", POSITIONAL_ORDER)
def test_a_null_in_the_named_form_is_an_error_naming_the_field(store, name):
    """A null has no meaning for any setting; leaving the key out takes the default."""
    with pytest.raises(FabricInputError, match="must not be null") as caught:
        parse([{name: None}], store)
    assert caught.value.field == name
    assert parse([{}], store) == FabricSettings()


@pytest.mark.parametrize("key", ["image", "weight"])
def test_a_null_inside_a_feedback_image_object_is_an_error(store, key):
    entry = {"image": store.add(picture(1)), "weight": 1.0, key: None}
    with pytest.raises(FabricInputError, match="must not be null") as caught:
        parse([{"liked": [entry]}], store)
    assert caught.value.field == f"liked[0].{key}"


def test_named_and_positional_forms_agree(store):
    a = store.add(picture(1))
    values = {
        "enabled": True, "liked": [a], "disliked": [{"image": a, "weight": 0.5}], "strength": 0.6, "start": 0.1,
        "end": 0.9, "min_strength": 0.05, "neg_scale": 0.25, "hires": True, "token_budget": 4096,
        "prompt_dropout": 0.3,
    }
    named = parse([values], store)
    positional = parse([values[n] for n in POSITIONAL_ORDER], store)
    assert named == positional
    assert named.liked == (FeedbackImage(a, 1.0),) and named.disliked == (FeedbackImage(a, 0.5),)
    assert (named.strength, named.start, named.end, named.min_strength, named.neg_scale) == (0.6, 0.1, 0.9, 0.05, 0.25)
    assert named.hires is True and named.token_budget == 4096


def test_named_form_omitted_keys_take_defaults(store):
    s = parse([{"enabled": True, "strength": 0.3}], store)
    assert s == dataclasses.replace(FabricSettings(), enabled=True, strength=0.3)


def test_positional_form_missing_trailing_values_take_defaults(store):
    s = parse([True, [], [], 0.5], store)
    assert s == dataclasses.replace(FabricSettings(), enabled=True, strength=0.5)


def test_from_hook_ignores_the_ui_defaults_after_a_named_object(store):
    # the webui copies args[0] into the first slot and fills the others with the UI defaults
    hook_args = [{"enabled": True, "strength": 0.4}, [], [], 0.8, 0.0, 0.8, 0.0, 0.5, False, 0]
    assert parse(hook_args, store, from_hook=True).strength == 0.4
    with pytest.raises(FabricInputError) as info:
        parse(hook_args, store)
    assert info.value.field == "args[1]" and "no values may follow" in info.value.message


def test_integers_are_numbers_and_integral_floats_are_whole(store):
    s = parse([{"strength": 1, "start": 0, "token_budget": 256.0}], store)
    assert s.strength == 1.0 and isinstance(s.strength, float) and s.token_budget == 256
    assert isinstance(s.token_budget, int)


# -- feedback images -------------------------------------------------------------------------------


def test_every_form_of_feedback_image(store):
    pics = [picture(i) for i in range(6)]
    known = store.add(pics[0])
    liked = [
        known,
        b64(pics[1]),
        data_url(pics[2]),
        {"image": b64(pics[3]), "weight": 2.5},
        {"image": known, "weight": 0},
        {"id": known, "weight": 3},
        {"image": data_url(pics[4])},
        FeedbackImage(known, 1.5),
    ]
    s = parse([{"enabled": True, "liked": liked, "disliked": [b64(pics[5], "JPEG", quality=100)]}], store)
    want = [image_id(p) for p in pics]
    assert [(f.id, f.weight) for f in s.liked] == [
        (want[0], 1.0), (want[1], 1.0), (want[2], 1.0), (want[3], 2.5), (want[0], 0.0), (want[0], 3.0),
        (want[4], 1.0), (want[0], 1.5),
    ]
    # inline pictures were added to the store, under the ids the settings use
    for f in s.liked + s.disliked:
        assert store.has(f.id)
    assert store.get(want[3]).tobytes() == pics[3].tobytes()


def test_commit_false_writes_nothing_but_gives_the_ids(store, tmp_path):
    pic = picture(7)
    s = parse([{"liked": [b64(pic)]}], store, commit=False)
    assert s.liked == (FeedbackImage(image_id(pic)),)
    assert tree(tmp_path) == {}


def test_a_rejected_payload_stores_nothing(store, tmp_path):
    good = [b64(picture(i)) for i in range(3)]
    with pytest.raises(FabricInputError) as info:
        parse([{"enabled": True, "liked": good, "disliked": [{"image": good[0], "weight": 9}]}], store)
    assert info.value.field == "disliked[0].weight"
    with pytest.raises(FabricInputError):
        parse([{"enabled": True, "liked": good, "token_budget": -1}], store)
    assert tree(tmp_path) == {}


def test_sets_may_be_json_text_from_a_ui_control(store):
    a = store.add(picture(1))
    assert parse([True, json.dumps([a]), ""], store).liked == (FeedbackImage(a),)
    with pytest.raises(FabricInputError, match="not valid JSON") as info:
        parse([True, "[oops"], store)
    assert info.value.field == "liked"


def test_limits_apply(store):
    small = Limits(max_images_per_set=2, max_pixels=50, max_image_bytes=400)
    a = store.add(picture(1))
    with pytest.raises(FabricInputError, match="at most 2 images per set, got 3") as info:
        parse([{"disliked": [a, a, a]}], store, limits=small)
    assert info.value.field == "disliked"
    with pytest.raises(FabricInputError, match="over the limit of 50") as info:
        parse([{"liked": [b64(picture(1, size=(8, 7)))]}], store, limits=small)
    assert info.value.field == "liked[0]"
    with pytest.raises(FabricInputError, match="characters of base64, over the limit of 400") as info:
        parse([{"liked": [{"image": b64(picture(1, size=(7, 7)).resize((64, 64)))}]}], store, limits=small)
    assert info.value.field == "liked[0].image"


def test_default_limits():
    assert Limits() == Limits(max_images_per_set=16, max_pixels=4096 * 4096, max_image_bytes=32 * 1024 * 1024,
                              max_request_bytes=256 * 1024 * 1024)
    assert "max_pixels" in Limits.__doc__


# -- errors: one per field kind ----------------------------------------------------------------------

UNKNOWN = "0123456789abcdef"

ERRORS = [
    # (named settings, field, words in the message)
    ({"enabled": 1}, "enabled", "must be true or false"),
    ({"enabled": "true"}, "enabled", "must be true or false"),
    ({"hires": 0}, "hires", "must be true or false"),
    ({"strength": 1.5}, "strength", "between 0 and 1"),
    ({"strength": -0.1}, "strength", "between 0 and 1"),
    ({"strength": float("nan")}, "strength", "finite"),
    ({"strength": float("inf")}, "strength", "finite"),
    ({"strength": "0.5"}, "strength", "must be a number"),
    ({"strength": True}, "strength", "must be a number"),
    ({"strength": [0.5]}, "strength", "must be a number"),
    ({"strength": 10**400}, "strength", "finite"),
    ({"start": 2}, "start", "between 0 and 1"),
    ({"end": -1}, "end", "between 0 and 1"),
    ({"start": 0.9, "end": 0.1}, "end", "must not be before start"),
    ({"min_strength": float("-inf")}, "min_strength", "finite"),
    ({"neg_scale": 1.01}, "neg_scale", "between 0 and 1"),
    ({"token_budget": -1}, "token_budget", "between 0 and 1000000"),
    ({"token_budget": 1_000_001}, "token_budget", "between 0 and 1000000"),
    ({"token_budget": 1.5}, "token_budget", "whole number"),
    ({"token_budget": float("nan")}, "token_budget", "whole number"),
    ({"token_budget": "5"}, "token_budget", "whole number"),
    ({"token_budget": False}, "token_budget", "whole number"),
    ({"liked": "abc"}, "liked", "must be a list"),
    ({"liked": 5}, "liked", "must be a list"),
    ({"liked": {"image": "x"}}, "liked", "must be a list"),
    ({"disliked": [5]}, "disliked[0]", "a feedback image must be"),
    ({"disliked": [None]}, "disliked[0]", "a feedback image must be"),
    ({"disliked": [["nested"]]}, "disliked[0]", "a feedback image must be"),
    ({"liked": ["/etc/passwd"]}, "liked[0]", "paths and URLs are never read"),
    ({"liked": ["https://example.com/a.png"]}, "liked[0]", "paths and URLs are never read"),
    ({"liked": ["not base64!"]}, "liked[0]", "not valid base64"),
    ({"liked": [UNKNOWN]}, "liked[0]", "no image with id"),
    ({"liked": [{"image": UNKNOWN}]}, "liked[0].image", "no image with id"),
    ({"liked": [{"image": 5}]}, "liked[0].image", "base64 string"),
    ({"liked": [{"id": "abc"}]}, "liked[0].id", "not an image id"),
    ({"liked": [{"weight": 1}]}, "liked[0]", 'needs "image"'),
    ({"liked": [{"image": "x", "id": UNKNOWN}]}, "liked[0]", "not both"),
    ({"liked": [{"image": "x", "wieght": 2}]}, "liked[0].wieght", "did you mean 'weight'"),
    ({"liked": [{"image": "x", 5: 2}]}, "liked[0]", "keys must be strings"),
    ({"strenght": 0.5}, "strenght", "did you mean 'strength'"),
    ({"colour": 1}, "colour", "valid keys: enabled, liked"),
]


@pytest.mark.parametrize("named, field, words", ERRORS, ids=[e[1] + ":" + e[2][:20] for e in ERRORS])
def test_each_error_names_its_field(store, named, field, words):
    with pytest.raises(FabricInputError) as info:
        parse([named], store)
    assert info.value.field == field
    assert words in info.value.message
    assert str(info.value) == f"{field}: {info.value.message}"


def test_weight_errors(store):
    a = store.add(picture(1))
    for weight, words in [(4.01, "between 0 and 4"), (-1, "between 0 and 4"), (float("nan"), "finite"),
                          ("2", "must be a number"), (True, "must be a number")]:
        with pytest.raises(FabricInputError, match=words) as info:
            parse([{"liked": [a, a, {"image": a, "weight": weight}]}], store)
        assert info.value.field == "liked[2].weight"


def test_unknown_id_is_a_not_found_error(store):
    with pytest.raises(FabricNotFoundError):
        parse([{"liked": [UNKNOWN]}], store)


@pytest.mark.parametrize("args", [{"enabled": True}, "abc", None, 5, b"xx"])
def test_args_must_be_a_list(store, args):
    with pytest.raises(FabricInputError, match="must be a list") as info:
        parse(args, store)
    assert info.value.field == "args"


def test_too_many_positional_values(store):
    with pytest.raises(FabricInputError, match="at most 11 positional values") as info:
        parse([False] + [None] * 11, store)
    assert info.value.field == "args[11]"


def test_exact_json_locations_with_a_prefix(store):
    a = store.add(picture(1))
    p = "alwayson_scripts.FABRIC.args"
    cases = [
        ([{"liked": [a, a, {"image": a, "weight": 7}]}], f"{p}[0].liked[2].weight", "between 0 and 4"),
        ([{"strength": 3}], f"{p}[0].strength", "between"),
        ([{"bogus": 3}], f"{p}[0].bogus", "unknown key"),
        ([True, [a, 5]], f"{p}[1][1]", "(liked) a feedback image"),
        ([True, [], [{"image": a, "weight": -1}]], f"{p}[2][0].weight", "(disliked) must be"),
        ([True, [], [], 0.5, 0.5, 0.5, 0.5, 0.5, "no"], f"{p}[8]", "(hires) must be true or false"),
        ([True, [], [], 0.5, 0.9, 0.1], f"{p}[5]", "(end) must not be before start"),
        ([{}, 1], f"{p}[1]", "no values may follow"),
        ("x", p, "must be a list"),
    ]
    for args, field, words in cases:
        with pytest.raises(FabricInputError) as info:
            parse(args, store, field_prefix=p)
        assert info.value.field == field, (args, str(info.value))
        assert words in info.value.message, (args, str(info.value))


def test_settings_objects_validate_themselves():
    with pytest.raises(FabricInputError, match="strength"):
        FabricSettings(strength=2.0)
    with pytest.raises(FabricInputError, match="end"):
        FabricSettings(start=0.5, end=0.4)
    with pytest.raises(FabricInputError, match="liked\\[0\\]"):
        FabricSettings(liked=("0123456789abcdef",))
    with pytest.raises(FabricInputError, match="weight"):
        FeedbackImage("0123456789abcdef", 5)
    with pytest.raises(FabricInputError, match="id"):
        FeedbackImage("../etc")
    s = FabricSettings(liked=[FeedbackImage("0123456789abcdef")])
    assert s.liked == (FeedbackImage("0123456789abcdef", 1.0),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.strength = 0.1


def test_parse_feedback_sets(store, tmp_path):
    a = store.add(picture(1))
    liked, disliked = parse_feedback_sets([a, b64(picture(2))], [{"image": a, "weight": 2}], store=store)
    assert liked == (FeedbackImage(a), FeedbackImage(image_id(picture(2))))
    assert disliked == (FeedbackImage(a, 2.0),)
    with pytest.raises(FabricInputError) as info:
        parse_feedback_sets([b64(picture(3))], [5], store=store)
    assert info.value.field == "disliked[0]"
    assert not store.has(image_id(picture(3)))


# -- infotext ------------------------------------------------------------------------------------


def webui_infotext(params: dict) -> str:
    """How the webui writes extra_generation_params (infotext_utils.quote)."""
    def quote(text):
        text = str(text)
        return text if "," not in text and "\n" not in text and ":" not in text else json.dumps(text, ensure_ascii=False)

    return ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in params.items() if v is not None)


def webui_parse(line: str) -> dict:
    """How the webui reads it back (parse_generation_parameters' regex and unquote)."""
    out = {}
    for k, v in re.findall(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)', line):
        if v and v[0] == '"' and v[-1] == '"':
            v = json.loads(v)
        out[k] = v
    return out


def sample_settings():
    return [
        FabricSettings(enabled=True),
        FabricSettings(
            enabled=True,
            liked=(FeedbackImage("0123456789abcdef"), FeedbackImage("fedcba9876543210", 1.5)),
            disliked=(FeedbackImage("00000000000000ff", 0.1 + 0.2),),
            strength=1 / 3, start=0.05, end=1.0, min_strength=1e-5, neg_scale=0.0, hires=True, token_budget=1_000_000,
            prompt_dropout=0.25,
        ),
        FabricSettings(enabled=True, disliked=(FeedbackImage("0123456789abcdef", 0.0),), strength=0.0, end=0.0),
    ]


def test_infotext_keys():
    assert INFOTEXT_KEYS == {
        "liked": "FABRIC liked", "disliked": "FABRIC disliked", "strength": "FABRIC strength",
        "start": "FABRIC start", "end": "FABRIC end", "min_strength": "FABRIC min strength",
        "neg_scale": "FABRIC neg scale", "hires": "FABRIC hires", "token_budget": "FABRIC token budget",
        "prompt_dropout": "FABRIC prompt dropout",
    }


def test_infotext_is_empty_when_disabled():
    assert settings_to_infotext(FabricSettings(enabled=False, strength=0.3)) == {}
    assert settings_from_infotext({"Steps": "20", "Sampler": "Euler"}) == {}


def test_infotext_values():
    text = settings_to_infotext(sample_settings()[1])
    assert text["FABRIC liked"] == "0123456789abcdef,fedcba9876543210:1.5"
    assert text["FABRIC disliked"] == "00000000000000ff:0.30000000000000004"
    assert text["FABRIC strength"] == "0.3333333333333333"
    assert text["FABRIC end"] == "1" and text["FABRIC hires"] == "True"
    assert text["FABRIC token budget"] == "1000000"
    assert "FABRIC liked" not in settings_to_infotext(FabricSettings(enabled=True))
    assert all(isinstance(v, str) for v in text.values())


@pytest.mark.parametrize("index", range(3))
def test_infotext_round_trips_through_the_webuis_writer_and_parser(store, index):
    s = sample_settings()[index]
    for ident in {f.id for f in s.liked + s.disliked}:
        store.images_dir.mkdir(parents=True, exist_ok=True)
        (store.images_dir / f"{ident}.png").write_bytes(b"")  # has() only looks for the file
    line = webui_infotext({"Steps": "20", **settings_to_infotext(s), "Version": "v1.10.1"})
    found = settings_from_infotext(webui_parse(line))
    assert found["enabled"] is True
    assert parse([found], store) == s
    # and straight, without the webui's quoting
    assert parse([settings_from_infotext(settings_to_infotext(s))], store) == s


@pytest.mark.parametrize(
    "params, field",
    [
        ({"FABRIC strength": "strong"}, "FABRIC strength"),
        ({"FABRIC strength": "2"}, "FABRIC strength"),
        ({"FABRIC strength": "nan"}, "FABRIC strength"),
        ({"FABRIC token budget": "1.5"}, "FABRIC token budget"),
        ({"FABRIC hires": "yes"}, "FABRIC hires"),
        ({"FABRIC liked": "0123456789abcdef,../../etc"}, "FABRIC liked[1]"),
        ({"FABRIC liked": "0123456789abcdef:9"}, "FABRIC liked[0]"),
        ({"FABRIC liked": "0123456789abcdef:x"}, "FABRIC liked[0]"),
        ({"FABRIC disliked": '"unterminated'}, "FABRIC disliked[0]"),
    ],
)
def test_bad_infotext_values_name_their_key(params, field):
    with pytest.raises(FabricInputError) as info:
        settings_from_infotext(params)
    assert info.value.field == field


def test_infotext_ignores_unknown_fabric_keys():
    assert settings_from_infotext({"FABRIC future": "x", "FABRIC strength": 0.5}) == {"enabled": True, "strength": 0.5}


def test_info_dict_is_json():
    s = sample_settings()[1]
    info = settings_to_info_dict(s)
    assert json.loads(json.dumps(info)) == info
    assert list(info) == list(POSITIONAL_ORDER)
    assert info["liked"] == [{"id": "0123456789abcdef", "weight": 1.0}, {"id": "fedcba9876543210", "weight": 1.5}]
    assert info["enabled"] is True and math.isclose(info["strength"], 1 / 3)
