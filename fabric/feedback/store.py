"""The feedback store: liked and disliked images by content, and named presets of them.

Layout under ``root`` (chosen by the caller, outside the extension's folder so that updating or
reinstalling the extension loses nothing)::

    images/<id>.png        one RGB PNG per picture, id = fabric.feedback.images.image_id(pixels)
    presets/<key>.json     {"version": 1, "name": ..., "liked": [...], "disliked": [...]}
    .lock                  locked around every change, so that processes can share the folder

Every write goes to a temporary file in the target's folder, is flushed to the disk and then
renamed over the target, so a reader sees the old file or the new one, never a part; a failed
write removes its temporary file and leaves the store as it was.  Image ids are checked against
``^[0-9a-f]{16}$`` and preset file names are a hash of the preset's name, so nothing a client
sends can point outside ``root``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import re
import tempfile
import threading
import time
import unicodedata
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from PIL import Image

from ..errors import FabricInputError, FabricNotFoundError, FabricStoreError
from .images import ID_PATTERN, image_id, to_rgb

__all__ = [
    "FeedbackStore",
    "MAX_PRESET_NAME",
    "MAX_WEIGHT",
    "check_image_id",
    "check_preset_name",
]

#: Longest preset name, in characters.
MAX_PRESET_NAME = 100
#: Largest weight of one feedback image.
MAX_WEIGHT = 4.0
#: Most images one preset set may hold (a sanity bound on the file, not the generation limit).
MAX_PRESET_IMAGES = 1000

_LOCK_FILE = ".lock"
_TEMP_PREFIX = ".tmp-"
_TEMP_SUFFIX = ".part"
_STALE_TEMP_S = 3600.0
_IMAGE_FILE = re.compile(r"([0-9a-f]{16})\.png")
_PRESET_FILE = re.compile(r"[0-9a-f]{32}\.json")
# Bidirectional embeddings, overrides and isolates: they can make a name display as another.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def check_image_id(value: object, field: str = "id") -> str:
    """``value`` if it is a well-formed image id (16 lowercase hex digits), else FabricInputError."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        shown = repr(value) if isinstance(value, str) and len(value) <= 40 else "this value"
        raise FabricInputError(field, f"{shown} is not an image id (16 lowercase hex digits)")
    return value


def check_preset_name(value: object, field: str = "name") -> str:
    """The preset name in NFC form, or FabricInputError.

    Any Unicode text of 1 to 100 characters is a name, except control characters, unpaired
    surrogates, and the bidirectional override/embedding/isolate characters (U+202A-U+202E,
    U+2066-U+2069), which would let one name display as another.  Slashes, dots and the like are
    fine: names never become paths.
    """
    if not isinstance(value, str):
        raise FabricInputError(field, "a preset name must be a string")
    name = unicodedata.normalize("NFC", value)
    if not name:
        raise FabricInputError(field, "a preset name must not be empty")
    if len(name) > MAX_PRESET_NAME:
        raise FabricInputError(field, f"a preset name has at most {MAX_PRESET_NAME} characters, not {len(name)}")
    for ch in name:
        category = unicodedata.category(ch)
        if category == "Cc" or ch in "\u2028\u2029":
            raise FabricInputError(field, f"a preset name must not contain control characters (U+{ord(ch):04X})")
        if category == "Cs":
            raise FabricInputError(field, "a preset name must be valid Unicode (it has an unpaired surrogate)")
        if ch in _BIDI_CONTROLS:
            raise FabricInputError(
                field, f"a preset name must not contain bidirectional override characters (U+{ord(ch):04X})"
            )
    return name


class FeedbackStore:
    """Content-addressed images and presets under ``root``.  Safe to share between threads."""

    def __init__(self, root: os.PathLike | str):
        self.root = Path(root)
        self.images_dir = self.root / "images"
        self.presets_dir = self.root / "presets"
        self._lock = threading.RLock()
        self._swept = False

    def __repr__(self) -> str:
        return f"FeedbackStore({str(self.root)!r})"

    # -- images -------------------------------------------------------------------------------

    def add(self, img: Image.Image) -> str:
        """Store ``img`` (as RGB) and return its id.  An image already stored is not rewritten."""
        rgb = to_rgb(img)
        if rgb.mode != "RGB":  # to_rgb returns RGB; this guards subclasses of Image
            rgb = rgb.convert("RGB")
        image = rgb
        ident = image_id(image)
        path = self._image_path(ident)
        with self._exclusive():
            if self._is_sound_png(path):
                return ident
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", compress_level=4)
            self._write_atomic(path, buffer.getvalue())
        return ident

    def has(self, ident: object) -> bool:
        """Whether an image with this id is stored (False for anything that is not an id)."""
        if not isinstance(ident, str) or not ID_PATTERN.fullmatch(ident):
            return False
        return self._image_path(ident).is_file()

    def get(self, ident: object, field: str = "id") -> Image.Image:
        """The stored image, loaded, as RGB.

        Raises FabricInputError for a malformed id, FabricNotFoundError for an unknown one, and
        FabricInputError for a file that is unreadable or whose pixels no longer match its id.
        """
        ident = check_image_id(ident, field)
        path = self._image_path(ident)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise FabricNotFoundError(field, f"no image with id {ident} in the FABRIC store") from None
        except IsADirectoryError:
            raise FabricInputError(field, f"the stored image {ident} is not a file") from None
        except OSError as exc:
            raise _store_error("read", path, exc) from None
        corrupt = f"the stored image {ident} is damaged; delete it and upload the picture again"
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                with Image.open(io.BytesIO(data), formats=["PNG"]) as opened:
                    opened.load()
                    img = to_rgb(opened)
                    if img is opened:
                        img = opened.copy()
            except Exception:
                raise FabricInputError(field, corrupt) from None
        if image_id(img) != ident:
            raise FabricInputError(field, corrupt)
        img.info.clear()
        return img

    def png_bytes(self, ident: object, field: str = "id") -> bytes:
        """The stored PNG file of an image, as it is on disk."""
        ident = check_image_id(ident, field)
        path = self._image_path(ident)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise FabricNotFoundError(field, f"no image with id {ident} in the FABRIC store") from None
        except OSError as exc:
            raise _store_error("read", path, exc) from None

    def list(self) -> list[dict[str, Any]]:
        """``[{id, width, height, bytes, mtime}]`` of the stored images, oldest first.

        width and height are None for a file whose header cannot be read.
        """
        entries = []
        for name in self._names(self.images_dir):
            match = _IMAGE_FILE.fullmatch(name)
            if not match:
                continue
            path = self.images_dir / name
            try:
                stat = path.stat()
                width, height = _png_size(path)
            except FileNotFoundError:
                continue  # deleted while we looked
            except OSError:
                continue
            entries.append(
                {"id": match.group(1), "width": width, "height": height, "bytes": stat.st_size, "mtime": stat.st_mtime}
            )
        entries.sort(key=lambda e: (e["mtime"], e["id"]))
        return entries

    def delete(self, ident: object, field: str = "id") -> None:
        """Remove an image.  Presets that name it keep the id (loading them then reports it)."""
        ident = check_image_id(ident, field)
        path = self._image_path(ident)
        with self._exclusive():
            try:
                path.unlink()
            except FileNotFoundError:
                raise FabricNotFoundError(field, f"no image with id {ident} in the FABRIC store") from None
            except OSError as exc:
                raise _store_error("delete", path, exc) from None

    def prune(self, keep: Iterable[str] = ()) -> list[str]:
        """Delete the images that no preset names and that are not in ``keep``; return their ids.

        If a preset file cannot be read, nothing is deleted (its images cannot be known) and
        FabricStoreError names the file.
        """
        with self._exclusive():
            referenced = set(keep)
            for name in self._names(self.presets_dir):
                if not _PRESET_FILE.fullmatch(name):
                    continue
                path = self.presets_dir / name
                try:
                    preset = self._read_preset_file(path)
                except FileNotFoundError:
                    continue
                except (OSError, ValueError) as exc:
                    raise FabricStoreError(
                        f"prune stopped, nothing was deleted: the preset file {path} cannot be read ({exc}); "
                        "delete or repair it first"
                    ) from None
                for key in ("liked", "disliked"):
                    referenced.update(entry["id"] for entry in preset[key])
            removed = []
            for entry in self.list():
                if entry["id"] in referenced:
                    continue
                try:
                    self._image_path(entry["id"]).unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise _store_error("delete", self._image_path(entry["id"]), exc) from None
                removed.append(entry["id"])
            return removed

    # -- presets ------------------------------------------------------------------------------

    def save_preset(self, name: object, liked: Iterable[Any], disliked: Iterable[Any]) -> dict[str, Any]:
        """Write a preset (replacing one of the same name) and return it as stored.

        ``liked`` and ``disliked`` hold ``{"id": str, "weight": float}`` mappings (or objects with
        ``id`` and ``weight`` attributes); every id must be in the store.
        """
        name = check_preset_name(name)
        sets = {"liked": self._preset_entries(liked, "liked"), "disliked": self._preset_entries(disliked, "disliked")}
        document = {"version": 1, "name": name, **sets}
        data = json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")
        with self._exclusive():  # a prune elsewhere must not delete the images between check and write
            for key, entries in sets.items():
                for i, entry in enumerate(entries):
                    if not self.has(entry["id"]):
                        raise FabricNotFoundError(f"{key}[{i}].id", f"no image with id {entry['id']} in the FABRIC store")
            self._write_atomic(self._preset_path(name), data)
        return {"name": name, **sets}

    def load_preset(self, name: object) -> dict[str, Any]:
        """``{"name", "liked", "disliked"}`` of a preset; FabricNotFoundError if there is none."""
        name = check_preset_name(name)
        path = self._preset_path(name)
        try:
            preset = self._read_preset_file(path)
        except FileNotFoundError:
            raise FabricNotFoundError("name", f"no preset named {name!r}") from None
        except ValueError as exc:
            raise FabricInputError("name", f"the preset {name!r} is damaged ({exc}); delete it and save it again") from None
        except OSError as exc:
            raise _store_error("read", path, exc) from None
        if preset["name"] != name:  # a hash collision, or a file copied under another name
            raise FabricNotFoundError("name", f"no preset named {name!r}")
        return preset

    def list_presets(self) -> list[dict[str, Any]]:
        """Every readable preset, ``{"name", "liked", "disliked", "mtime"}``, sorted by name."""
        presets = []
        for filename in self._names(self.presets_dir):
            if not _PRESET_FILE.fullmatch(filename):
                continue
            path = self.presets_dir / filename
            try:
                preset = self._read_preset_file(path)
                preset["mtime"] = path.stat().st_mtime
            except (OSError, ValueError):
                continue
            presets.append(preset)
        presets.sort(key=lambda p: p["name"])
        return presets

    def delete_preset(self, name: object) -> None:
        name = check_preset_name(name)
        path = self._preset_path(name)
        with self._exclusive():
            try:
                path.unlink()
            except FileNotFoundError:
                raise FabricNotFoundError("name", f"no preset named {name!r}") from None
            except OSError as exc:
                raise _store_error("delete", path, exc) from None

    # -- internals ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self):
        """Every change, against the other threads and against other processes that share
        ``root`` (several webuis on one store folder, also on a network drive). Reads need no
        lock: every file is replaced whole. The file lock is a POSIX record lock (fcntl.lockf),
        which NFS carries between machines, or msvcrt's on Windows."""
        with self._lock:
            if not self.root.is_dir():  # nothing to share yet; the first write makes the folder
                yield
                return
            try:
                handle = open(self.root / _LOCK_FILE, "a+b")
            except OSError as exc:
                raise _store_error("lock", self.root / _LOCK_FILE, exc) from None
            try:
                _lock_file(handle)
                try:
                    yield
                finally:
                    _unlock_file(handle)
            finally:
                handle.close()

    def _image_path(self, ident: str) -> Path:
        return self.images_dir / f"{ident}.png"

    def _preset_path(self, name: str) -> Path:
        key = hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]
        return self.presets_dir / f"{key}.json"

    @staticmethod
    def _names(folder: Path) -> list[str]:
        try:
            return os.listdir(folder)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _store_error("read", folder, exc) from None

    @staticmethod
    def _is_sound_png(path: Path) -> bool:
        """Whether ``path`` holds a complete PNG (chunk CRCs checked, pixels not decoded)."""
        try:
            with Image.open(path, formats=["PNG"]) as img:
                img.verify()
            return True
        except Exception:
            return False

    @staticmethod
    def _preset_entries(entries: Iterable[Any], key: str) -> list[dict[str, Any]]:
        if isinstance(entries, (str, bytes, Mapping)) or entries is None:
            raise FabricInputError(key, "must be a list of {id, weight} entries")
        result = []
        for i, entry in enumerate(entries):
            if i >= MAX_PRESET_IMAGES:
                raise FabricInputError(key, f"a preset set holds at most {MAX_PRESET_IMAGES} images")
            if isinstance(entry, Mapping):
                unknown = set(entry) - {"id", "weight"}
                if unknown:
                    raise FabricInputError(f"{key}[{i}]", f"unknown key {sorted(map(str, unknown))[0]!r}")
                ident, weight = entry.get("id"), entry.get("weight", 1.0)
            else:
                ident, weight = getattr(entry, "id", None), getattr(entry, "weight", 1.0)
            check_image_id(ident, f"{key}[{i}].id")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise FabricInputError(f"{key}[{i}].weight", "must be a finite number")
            if not 0.0 <= weight <= MAX_WEIGHT:
                raise FabricInputError(f"{key}[{i}].weight", f"must be between 0 and {MAX_WEIGHT:g}, not {weight}")
            result.append({"id": ident, "weight": float(weight)})
        return result

    def _read_preset_file(self, path: Path) -> dict[str, Any]:
        """The preset in ``path``; ValueError when the file is not a valid preset."""
        raw = path.read_bytes()
        try:
            document = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
        if not isinstance(document, dict) or document.get("version") != 1:
            raise ValueError("not a FABRIC preset (version 1)")
        try:
            name = check_preset_name(document.get("name"))
            liked = self._preset_entries(document.get("liked"), "liked")
            disliked = self._preset_entries(document.get("disliked"), "disliked")
        except FabricInputError as exc:
            raise ValueError(str(exc)) from None
        return {"name": name, "liked": liked, "disliked": disliked}

    def _write_atomic(self, path: Path, data: bytes) -> None:
        """Write ``data`` to ``path`` through a temporary file and a rename, or change nothing."""
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _store_error("write", folder, exc) from None
        self._sweep_stale_temp_files()
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=folder)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            raise _store_error("write", path, exc) from None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        _fsync_folder(folder)

    def _sweep_stale_temp_files(self) -> None:
        """Remove temporary files left by a process that died mid-write (once, old ones only)."""
        if self._swept:
            return
        self._swept = True
        now = time.time()
        for folder in (self.images_dir, self.presets_dir):
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                if name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX):
                    try:
                        if now - (folder / name).stat().st_mtime > _STALE_TEMP_S:
                            (folder / name).unlink()
                    except OSError:
                        pass


if os.name == "nt":
    import msvcrt

    def _lock_file(handle) -> None:
        handle.seek(0)
        while True:  # LK_LOCK gives up after 10 tries of a second; a long prune elsewhere may last longer
            try:
                msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                return
            except OSError as exc:
                if exc.errno != errno.EDEADLK:
                    raise

    def _unlock_file(handle) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock_file(handle) -> None:
        fcntl.lockf(handle, fcntl.LOCK_EX)

    def _unlock_file(handle) -> None:
        fcntl.lockf(handle, fcntl.LOCK_UN)


def _png_size(path: Path) -> tuple[int | None, int | None]:
    """Width and height from a PNG's IHDR chunk, (None, None) when it is not a PNG."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or not head.startswith(b"\x89PNG\r\n\x1a\n") or head[12:16] != b"IHDR":
        return None, None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable, where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _store_error(action: str, path: Path, exc: OSError) -> FabricStoreError:
    code = getattr(exc, "errno", None)
    reason = exc.strerror or str(exc) or type(exc).__name__
    if code in (errno.ENOSPC, errno.EDQUOT):
        text = f"the disk holding the FABRIC store is full: could not {action} {path}; nothing was changed"
    elif code in (errno.EROFS, errno.EACCES, errno.EPERM) or isinstance(exc, PermissionError):
        text = f"the FABRIC store is not writable: could not {action} {path} ({reason}); nothing was changed"
    else:
        text = f"the FABRIC store could not {action} {path} ({reason}); nothing was changed"
    if action == "read":
        text = text.replace("; nothing was changed", "")
    err = FabricStoreError(text)
    err.errno = code
    return err
