"""FABRIC's settings: the script arguments, their validation, and their infotext form.

The webui hands a script its arguments as a flat list (one value per UI control, in the order of
:data:`POSITIONAL_ORDER`); API clients send either that list or, recommended, one object of named
settings::

    "alwayson_scripts": {"FABRIC": {"args": [{"enabled": true, "liked": ["<id or base64>"],
                                              "strength": 0.6}]}}

:func:`parse_script_args` turns either form into a :class:`FabricSettings`, or raises a
:class:`~fabric.errors.FabricInputError` naming the exact place of the first problem.  Images
sent inline are decoded and checked first and written to the store only once the whole payload
is valid, so a rejected payload leaves the store as it was.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from collections import OrderedDict

from ..errors import FabricInputError, FabricNotFoundError
from .images import ID_PATTERN, decode_image, image_id

__all__ = [
    "DEFAULTS",
    "FabricSettings",
    "FeedbackImage",
    "INFOTEXT_KEYS",
    "Limits",
    "MAX_TOKEN_BUDGET",
    "MAX_WEIGHT",
    "POSITIONAL_ORDER",
    "parse_feedback_sets",
    "parse_script_args",
    "settings_from_infotext",
    "settings_to_info_dict",
    "settings_to_infotext",
]

MAX_WEIGHT = 4.0
MAX_TOKEN_BUDGET = 1_000_000


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask of FABRIC (the defaults are meant to be settable).

    max_images_per_set: most images in the liked set, and in the disliked set, of one request
        (every one costs a reference pass row and extra attention keys at every scheduled step).
    max_pixels: most pixels (width x height, read from the header before decoding) of one image.
    max_image_bytes: longest base64 text of one image, in characters, checked before decoding.
    max_request_bytes: largest HTTP request body FABRIC's request check and endpoints buffer;
        a larger txt2img/img2img/FABRIC request is refused with HTTP 413.
    """

    max_images_per_set: int = 16
    max_pixels: int = 4096 * 4096
    max_image_bytes: int = 32 * 1024 * 1024
    max_request_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class FeedbackImage:
    """One feedback image: the id of a picture in the store and its weight (0..4, 1 = as is)."""

    id: str
    weight: float = 1.0

    def __post_init__(self):
        if not isinstance(self.id, str) or not ID_PATTERN.fullmatch(self.id):
            raise FabricInputError("id", f"{self.id!r} is not an image id (16 lowercase hex digits)")
        object.__setattr__(self, "weight", _check_number(self.weight, "weight", 0.0, MAX_WEIGHT))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "weight": self.weight}


@dataclass(frozen=True)
class FabricSettings:
    """The FABRIC script arguments.  The field order is the positional order of the UI controls.

    strength: attention weight of the liked images inside the [start, end] window of denoising
        progress (0 = start of sampling, 1 = end); min_strength: their weight outside it;
        neg_scale: the disliked images' weight as a fraction of the liked ones'; hires: also apply
        during the hires-fix pass; token_budget: most reference tokens per attention layer
        (0 = no budget); prompt_dropout: the probability with which each prompt word is dropped,
        per image from a generator seeded by the image's seed (the paper's §5.4; 0 = off).
    """

    enabled: bool = False
    liked: tuple[FeedbackImage, ...] = ()
    disliked: tuple[FeedbackImage, ...] = ()
    strength: float = 0.8
    start: float = 0.0
    end: float = 0.8
    min_strength: float = 0.0
    neg_scale: float = 0.5
    hires: bool = False
    token_budget: int = 0
    prompt_dropout: float = 0.0

    def __post_init__(self):
        for name in ("enabled", "hires"):
            _check_bool(getattr(self, name), name)
        for name in ("liked", "disliked"):
            images = getattr(self, name)
            if isinstance(images, (str, bytes, Mapping)) or not isinstance(images, Iterable):
                raise FabricInputError(name, "must be a sequence of FeedbackImage")
            images = tuple(images)
            for i, item in enumerate(images):
                if not isinstance(item, FeedbackImage):
                    raise FabricInputError(f"{name}[{i}]", "must be a FeedbackImage")
            object.__setattr__(self, name, images)
        for name in _UNIT_FIELDS:
            object.__setattr__(self, name, _check_number(getattr(self, name), name, 0.0, 1.0))
        object.__setattr__(self, "token_budget", _check_int(self.token_budget, "token_budget", 0, MAX_TOKEN_BUDGET))
        if self.start > self.end:
            raise FabricInputError("end", f"must not be before start ({self.start:g}), got {self.end:g}")


#: The field names in the order of the UI controls, which is the positional argument order.
POSITIONAL_ORDER: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(FabricSettings))
#: The defaults, by field name.
DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(FabricSettings)}

_UNIT_FIELDS = ("strength", "start", "end", "min_strength", "neg_scale", "prompt_dropout")
_BOOL_FIELDS = ("enabled", "hires")
_SET_FIELDS = ("liked", "disliked")
_ENTRY_KEYS = ("image", "id", "weight")
# A key that is present says what it wants; null says nothing, and taking it as the default would
# hide a client's bug (a request of all nulls used to run a vanilla job and answer 200).
_NULL = "must not be null: give a value, or leave the key out for its default"


# -- argument parsing ------------------------------------------------------------------------------


def parse_script_args(
    args: Sequence[Any],
    *,
    store,
    limits: Limits = Limits(),
    commit: bool = True,
    from_hook: bool = False,
    field_prefix: str | None = None,
) -> FabricSettings:
    """Validate FABRIC's script arguments and return them as :class:`FabricSettings`.

    ``args`` is either ``[{"enabled": ..., "liked": [...], ...}]`` (named: omitted keys take
    their defaults, unknown keys are errors) or values in :data:`POSITIONAL_ORDER` (missing
    trailing ones take their defaults).  In the named form a null value is an error (leave the
    key out instead); a positional ``None`` means "unset", i.e. the default.

    A feedback image is an image id already in ``store``; a base64 string or data:image URL;
    or ``{"image": <id | base64 | data URL>, "weight": w}`` (``"id"`` may stand for ``"image"``
    when the value is an id).  Inline images are decoded and checked first; with ``commit``
    they are then added to the store, after the whole payload has passed.  Without ``commit``
    nothing is written (the ids are computed all the same).

    ``from_hook``: the values come from the webui's ``p.script_args``, where every slot after a
    named object holds the UI's default value; those are then ignored rather than refused.

    ``field_prefix``: when given (``"alwayson_scripts.FABRIC.args"``), error fields are exact JSON
    locations under it (``...args[0].liked[2]`` named, ``...args[1][2]`` positional); otherwise
    they are setting names (``liked[2].weight``).

    Raises FabricInputError (FabricNotFoundError for unknown ids); store.add may raise
    FabricStoreError during the commit.
    """
    parser = _Parser(store, limits)
    values = parser.read_args(args, from_hook=from_hook, prefix=field_prefix)
    return parser.finish(values, commit=commit)


def parse_feedback_sets(
    liked: Any,
    disliked: Any,
    *,
    store,
    limits: Limits = Limits(),
    commit: bool = True,
) -> tuple[tuple[FeedbackImage, ...], tuple[FeedbackImage, ...]]:
    """Validate a liked and a disliked set (entries as in :func:`parse_script_args`)."""
    parser = _Parser(store, limits)
    sets = {
        "liked": parser.read_set(liked, "liked"),
        "disliked": parser.read_set(disliked, "disliked"),
    }
    resolved = parser.commit_images(commit)
    return tuple(_resolve(sets["liked"], resolved)), tuple(_resolve(sets["disliked"], resolved))


class _Pending:
    """An inline image decoded during validation, waiting to be added to the store."""

    __slots__ = ("image", "id", "digest")

    def __init__(self, image, ident, digest):
        self.image = image
        self.id = ident
        self.digest = digest


# The HTTP edge checks a txt2img/img2img request and stores its inline images; the webui then
# hands the same base64 text to the script. Remembering which id each text gave (by a digest of
# the text, a few ms per MB) spares decoding every inline image twice per request. Bounded: a
# request the webui refuses after the check leaves only a small entry behind.
_MAX_REMEMBERED_INLINE_IMAGES = 256
_stored_inline_images: "OrderedDict[str, str]" = OrderedDict()


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _remember_inline_image(digest: str, ident: str) -> None:
    _stored_inline_images[digest] = ident
    _stored_inline_images.move_to_end(digest)
    while len(_stored_inline_images) > _MAX_REMEMBERED_INLINE_IMAGES:
        _stored_inline_images.popitem(last=False)


class _Parser:
    def __init__(self, store, limits: Limits):
        self.store = store
        self.limits = limits
        self.pending: list[_Pending] = []

    # The first phase: read and check everything, decode inline images, write nothing.

    def read_args(self, args: Any, *, from_hook: bool, prefix: str | None) -> dict[str, Any]:
        where = prefix or "args"
        if isinstance(args, (str, bytes, Mapping)) or not isinstance(args, Sequence):
            raise FabricInputError(
                where, f"FABRIC's arguments must be a list ([{{...named settings...}}] or positional values), not {_kind(args)}"
            )
        if len(args) >= 1 and isinstance(args[0], Mapping):
            if len(args) > 1 and not from_hook:
                raise FabricInputError(
                    f"{prefix}[1]" if prefix else "args[1]",
                    "no values may follow the object of named settings: put every setting in that object",
                )
            named = args[0]
            loc = (lambda name: f"{prefix}[0].{name}") if prefix else (lambda name: name)
            for key, value in named.items():
                if key not in DEFAULTS:
                    where = _key_loc(f"{prefix}[0]" if prefix else "", key)
                    raise FabricInputError(where, _unknown_key(key, POSITIONAL_ORDER))
                if value is None:
                    raise FabricInputError(loc(key), _NULL)
            raw = {name: named.get(name) for name in POSITIONAL_ORDER}
        else:
            if len(args) > len(POSITIONAL_ORDER):
                extra = len(POSITIONAL_ORDER)
                raise FabricInputError(
                    f"{prefix}[{extra}]" if prefix else f"args[{extra}]",
                    f"FABRIC takes at most {len(POSITIONAL_ORDER)} positional values "
                    f"({', '.join(POSITIONAL_ORDER)}), got {len(args)}",
                )
            loc = (lambda name: f"{prefix}[{POSITIONAL_ORDER.index(name)}]") if prefix else (lambda name: name)
            raw = {name: (args[i] if i < len(args) else None) for i, name in enumerate(POSITIONAL_ORDER)}
            if prefix:
                # Locations like args[3] do not say which setting that is: the message does.
                return self.read_values(raw, loc, label=True)
        return self.read_values(raw, loc)

    def read_values(self, raw: Mapping[str, Any], loc, *, label: bool = False) -> dict[str, Any]:
        if label:
            try:
                return self.read_values(raw, loc)
            except FabricInputError as exc:
                name = next(
                    (n for n in reversed(POSITIONAL_ORDER) if exc.field == loc(n) or exc.field.startswith(loc(n) + "[")
                     or exc.field.startswith(loc(n) + ".")),
                    None,
                )
                if name is None:
                    raise
                raise type(exc)(exc.field, f"({name}) {exc.message}") from None
        values: dict[str, Any] = {}
        for name in POSITIONAL_ORDER:
            value = raw.get(name)
            if value is None:
                values[name] = DEFAULTS[name]
            elif name in _BOOL_FIELDS:
                values[name] = _check_bool(value, loc(name))
            elif name in _SET_FIELDS:
                values[name] = self.read_set(value, loc(name))
            elif name in _UNIT_FIELDS:
                values[name] = _check_number(value, loc(name), 0.0, 1.0)
            else:
                values[name] = _check_int(value, loc(name), 0, MAX_TOKEN_BUDGET)
        if values["start"] > values["end"]:
            raise FabricInputError(loc("end"), f"must not be before start ({values['start']:g}), got {values['end']:g}")
        return values

    def read_set(self, value: Any, where: str) -> list:
        if value is None or value == "":
            return []
        if isinstance(value, str) and value.lstrip().startswith("["):
            # A UI control may hold the set as JSON text.
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):
                raise FabricInputError(where, "must be a list of feedback images (the text is not valid JSON)") from None
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
            raise FabricInputError(where, f"must be a list of feedback images, not {_kind(value)}")
        if len(value) > self.limits.max_images_per_set:
            raise FabricInputError(
                where, f"at most {self.limits.max_images_per_set} images per set, got {len(value)}"
            )
        return [self.read_entry(item, f"{where}[{i}]") for i, item in enumerate(value)]

    def read_entry(self, item: Any, where: str):
        """A (reference, weight) pair; the reference is an id or a _Pending image."""
        if isinstance(item, FeedbackImage):
            return self.read_reference(item.id, where, id_only=True), item.weight
        if isinstance(item, Mapping):
            for key, value in item.items():
                if key not in _ENTRY_KEYS:
                    raise FabricInputError(_key_loc(where, key), _unknown_key(key, ("image", "weight")))
                if value is None:
                    raise FabricInputError(_key_loc(where, key), _NULL)
            if "image" in item and "id" in item:
                raise FabricInputError(where, 'give the picture as "image" or as "id", not both')
            if "id" in item:
                ref = self.read_reference(item["id"], f"{where}.id", id_only=True)
            elif "image" in item:
                ref = self.read_reference(item["image"], f"{where}.image")
            else:
                raise FabricInputError(where, 'a feedback image object needs "image" (an id, base64 or data URL)')
            weight = item.get("weight", 1.0)
            weight = _check_number(weight, f"{where}.weight", 0.0, MAX_WEIGHT)
            return ref, weight
        if isinstance(item, str):
            return self.read_reference(item, where), 1.0
        raise FabricInputError(
            where,
            "a feedback image must be an image id, a base64 string, a data:image/...;base64, URL "
            f'or {{"image": ..., "weight": ...}}, not {_kind(item)}',
        )

    def read_reference(self, value: Any, where: str, *, id_only: bool = False):
        if isinstance(value, str) and not id_only:
            stored = _stored_inline_images.get(_text_digest(value))
            if stored is not None and self.store.has(stored):
                return stored  # decoded and stored by the HTTP edge's check of this request
        if isinstance(value, str) and ID_PATTERN.fullmatch(value):
            if not self.store.has(value):
                raise FabricNotFoundError(
                    where,
                    f"no image with id {value} in the FABRIC store (upload it to /fabric/v1/images first, "
                    "or send the picture itself as base64)",
                )
            return value
        if id_only:
            raise FabricInputError(where, f"{_short(value)} is not an image id (16 lowercase hex digits)")
        image = decode_image(
            value, field=where, max_pixels=self.limits.max_pixels, max_bytes=self.limits.max_image_bytes
        )
        pending = _Pending(image, image_id(image), _text_digest(value))
        self.pending.append(pending)
        return pending

    # The second phase: write the inline images, then build the result.

    def commit_images(self, commit: bool) -> dict[int, str]:
        resolved = {}
        for pending in self.pending:
            ident = self.store.add(pending.image) if commit else pending.id
            resolved[id(pending)] = ident
            if commit:
                _remember_inline_image(pending.digest, ident)
            pending.image = None  # let the pixels go as soon as they are stored
        return resolved

    def finish(self, values: dict[str, Any], *, commit: bool) -> FabricSettings:
        resolved = self.commit_images(commit)
        for name in _SET_FIELDS:
            values[name] = tuple(_resolve(values[name], resolved))
        return FabricSettings(**values)


def _resolve(entries, resolved: dict[int, str]):
    for ref, weight in entries:
        ident = resolved[id(ref)] if isinstance(ref, _Pending) else ref
        yield FeedbackImage(ident, weight)


# -- infotext --------------------------------------------------------------------------------------

#: Infotext key of each setting written to the image's parameters (enabled is implied by their
#: presence).
INFOTEXT_KEYS: dict[str, str] = {
    "liked": "FABRIC liked",
    "disliked": "FABRIC disliked",
    "strength": "FABRIC strength",
    "start": "FABRIC start",
    "end": "FABRIC end",
    "min_strength": "FABRIC min strength",
    "neg_scale": "FABRIC neg scale",
    "hires": "FABRIC hires",
    "token_budget": "FABRIC token budget",
    "prompt_dropout": "FABRIC prompt dropout",
}


def settings_to_infotext(settings: FabricSettings) -> dict[str, str]:
    """The infotext entries for ``settings``; empty when FABRIC is off.

    Image sets are written as ``id`` or ``id:weight`` joined by commas (weight omitted when 1);
    empty sets are left out.  The webui JSON-quotes values containing ``,`` or ``:``.
    """
    if not settings.enabled:
        return {}
    out: dict[str, str] = {}
    for name, key in INFOTEXT_KEYS.items():
        value = getattr(settings, name)
        if name in _SET_FIELDS:
            if value:
                out[key] = ",".join(
                    image.id if image.weight == 1.0 else f"{image.id}:{_format_float(image.weight)}" for image in value
                )
        elif name in _BOOL_FIELDS:
            out[key] = "True" if value else "False"
        elif name == "token_budget":
            out[key] = str(value)
        elif name == "prompt_dropout":
            if value > 0:  # absent means off, so infotexts of jobs without it stay as they were
                out[key] = _format_float(value)
        else:
            out[key] = _format_float(value)
    return out


def settings_from_infotext(params: Mapping[str, Any]) -> dict[str, Any]:
    """The settings found in parsed infotext ``params``, by field name; ``{}`` when none is.

    Present FABRIC keys imply ``"enabled": True``; image sets come back as lists of
    ``{"id", "weight"}``, so the result can be passed to :func:`parse_script_args` as a named
    object.  Values are checked; a bad one raises FabricInputError naming its infotext key.
    Unknown ``FABRIC ...`` keys (from later versions) are ignored.
    """
    found: dict[str, Any] = {}
    for name, key in INFOTEXT_KEYS.items():
        if key not in params:
            continue
        raw = params[key]
        if isinstance(raw, str):
            raw = raw.strip()
            if len(raw) >= 2 and raw[0] == raw[-1] == '"':
                try:
                    raw = json.loads(raw)
                except ValueError:
                    raise FabricInputError(key, "badly quoted value") from None
        if name in _SET_FIELDS:
            found[name] = _parse_image_list(raw, key)
        elif name in _BOOL_FIELDS:
            if isinstance(raw, bool):
                found[name] = raw
            elif isinstance(raw, str) and raw.lower() in ("true", "false"):
                found[name] = raw.lower() == "true"
            else:
                raise FabricInputError(key, "must be True or False")
        else:
            number = _parse_number_text(raw, key)
            if name == "token_budget":
                found[name] = _check_int(number, key, 0, MAX_TOKEN_BUDGET)
            else:
                found[name] = _check_number(number, key, 0.0, 1.0)
    if found:
        found = {"enabled": True, **found}
    return found


def settings_to_info_dict(settings: FabricSettings) -> dict[str, Any]:
    """Every setting, JSON-serialisable, images as ``{"id", "weight"}`` (for the API's info)."""
    out: dict[str, Any] = {}
    for name in POSITIONAL_ORDER:
        value = getattr(settings, name)
        out[name] = [image.to_dict() for image in value] if name in _SET_FIELDS else value
    return out


def _parse_image_list(raw: Any, key: str) -> list[dict[str, Any]]:
    if not isinstance(raw, str):
        raise FabricInputError(key, "must be a list of image ids like id1,id2:1.5")
    entries = []
    for i, part in enumerate(p.strip() for p in raw.split(",")):
        if not part:
            continue
        ident, _, weight_text = part.partition(":")
        ident = ident.strip()
        if not ID_PATTERN.fullmatch(ident):
            raise FabricInputError(f"{key}[{i}]", f"{_short(ident)} is not an image id (16 lowercase hex digits)")
        weight = 1.0
        if weight_text:
            weight = _check_number(_parse_number_text(weight_text.strip(), f"{key}[{i}]"), f"{key}[{i}]", 0.0, MAX_WEIGHT)
        entries.append({"id": ident, "weight": weight})
    return entries


def _parse_number_text(raw: Any, key: str) -> Any:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        try:
            return float(raw) if any(c in raw for c in ".eEn") else int(raw)
        except ValueError:
            pass
    raise FabricInputError(key, f"must be a number, not {_short(raw)}")


def _format_float(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


# -- value checks ----------------------------------------------------------------------------------


def _check_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise FabricInputError(where, f"must be true or false, not {_kind(value)}")
    return value


def _check_number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FabricInputError(where, f"must be a number between {low:g} and {high:g}, not {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf if value > 0 else -math.inf
    if not math.isfinite(number):
        raise FabricInputError(where, f"must be a finite number between {low:g} and {high:g}, not {number}")
    if not low <= number <= high:
        raise FabricInputError(where, f"must be between {low:g} and {high:g}, not {_short(value)}")
    return number


def _check_int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FabricInputError(where, f"must be a whole number between {low} and {high}, not {_kind(value)}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise FabricInputError(where, f"must be a whole number between {low} and {high}, not {_short(value)}")
        value = int(value)
    if not low <= value <= high:
        raise FabricInputError(where, f"must be between {low} and {high}, not {_short(value)}")
    return int(value)


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


def _key_loc(base: str, key: Any) -> str:
    """The location of ``key`` under ``base``: ``base.key``, or ``base["odd key"]``."""
    if not isinstance(key, str):
        return base or "args[0]"
    if _PLAIN_KEY.fullmatch(key):
        return f"{base}.{key}" if base else key
    shown = key if len(key) <= 40 else key[:37] + "..."
    return f"{base}[{json.dumps(shown)}]"


def _unknown_key(key: Any, valid: Sequence[str]) -> str:
    if not isinstance(key, str):
        return f"keys must be strings, not {_kind(key)}"
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
    return f"unknown key {_short(key)}{hint}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {_short(value)}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _short(value: Any, limit: int = 40) -> str:
    try:
        text = repr(value)
    except Exception:  # pragma: no cover - a hostile __repr__
        text = type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
