"""Reading image files: one reader for every part of streamcosal (image groups, image sources,
evaluation, training data), with one rule for EXIF orientation.

PIL decodes, every format it can open here (:data:`IMAGE_SUFFIXES`: PNG, JPEG, BMP, TIFF, WebP, AVIF,
GIF, JPEG 2000, ...; HEIC/HEIF too where the ``pillow-heif`` plugin is installed: it is registered when
found); what people have on disk is converted to HxWx3 uint8 RGB (:func:`read_image`): grayscale,
palette, RGBA (alpha dropped), CMYK, 16-bit (scaled: 65535 -> 255) and float images; maps to HxW
uint8 (:func:`read_gray_checked`), ground-truth masks too, palette and label masks by their values
(:func:`read_mask`). Image files no installed decoder reads (HEIC without ``pillow-heif``,
JPEG XL without its plugin: :data:`PLUGIN_SUFFIXES`) are still listed as images, so that reading them
fails with a message naming the file and the plugin, instead of their being left out without a word.

Images up to :data:`MAX_PIXELS` are read (Pillow's own decompression-bomb limit, 179 megapixels, is
replaced by it); larger ones are refused as too large. With ``max_side``, a large JPEG is decoded at a
reduced scale (1/2, 1/4 or 1/8: PIL's draft mode), so a 20000x20000 photo costs about 6 megapixels.

**EXIF orientation is applied** to every file, images and masks alike: a phone photo stored sideways
with an orientation tag is read upright, as every viewer shows it, so its map lines up with what the
user sees (and a map is written at the upright size). Files without the tag (every co-saliency
dataset here) are read as stored.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from PIL import EpsImagePlugin, ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

for _plugin, _register in (("pillow_heif", "register_heif_opener"), ("pillow_jxl", None)):
    with contextlib.suppress(Exception):  # an optional plugin, used where installed (never a dependency)
        _module = importlib.import_module(_plugin)
        if _register:
            getattr(_module, _register)()

_FIRST = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_NOT_PHOTOS = {"MPEG", "IPTC"}  # Pillow only identifies these (.mpg videos, IPTC metadata): not images to read


def _readable_suffixes() -> tuple[str, ...]:
    """The file endings Pillow opens here: its formats and the installed plugins', less those it only
    identifies (stubs without a handler, .mpg), EPS without Ghostscript."""
    Image.init()
    readable = []
    for suffix, kind in Image.registered_extensions().items():
        factory = Image.OPEN.get(kind, (None,))[0] if kind != "MPO" else Image.OPEN.get("JPEG", (None,))[0]
        if factory is None or kind in _NOT_PHOTOS:
            continue
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            continue
        if kind == "EPS" and not EpsImagePlugin.has_ghostscript():
            continue
        readable.append(suffix.lower())
    return _FIRST + tuple(sorted(set(readable) - set(_FIRST)))


IMAGE_SUFFIXES: tuple[str, ...] = _readable_suffixes()
"""File endings read as images (every format Pillow opens here), compared in lower case; where two files
share a stem (a dataset's mask beside an image), the earlier ending wins: .png, .jpg, .jpeg, .bmp, .tif,
.tiff, .webp, then the others in alphabetical order."""
PLUGIN_SUFFIXES: dict[str, tuple[str, str]] = {
    suffix: what for suffix, what in {
        ".heic": ("HEIC", "pillow-heif"), ".heif": ("HEIF", "pillow-heif"), ".hif": ("HEIF", "pillow-heif"),
        ".avif": ("AVIF", "pillow-heif, or a Pillow built with libavif"), ".jxl": ("JPEG XL", "pillow-jxl-plugin"),
    }.items() if suffix not in IMAGE_SUFFIXES
}
"""Image files no decoder here reads: ending -> (format, the Pillow plugin that reads it). They are listed
as images (:func:`is_image_name`), and reading one says which plugin it needs."""
ANIMATED_SUFFIXES = frozenset({".gif", ".apng", ".fli", ".flc", ".avifs"})
"""Image formats that may hold an animation: one such file given alone is read as a video."""
MAX_PIXELS = 400_000_000
"""The largest image read (width x height); larger ones are refused as too large."""
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_OPENING = threading.Lock()  # Pillow's pixel limit is a module global: set aside only while a header is read


def is_image_name(path: Path) -> bool:
    """Whether a file is taken as an image by its name: a readable format (:data:`IMAGE_SUFFIXES`) or one
    that needs a plugin not installed here (:data:`PLUGIN_SUFFIXES`: reading it says so)."""
    suffix = path.suffix.lower()
    return suffix in IMAGE_SUFFIXES or suffix in PLUGIN_SUFFIXES


def image_files(folder_or_paths: Path | Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """A folder's files (sorted by name; hidden files left out: macOS's ``._IMG_1.jpg`` beside each copied
    photo is no image), or the given paths (in their order), split into images (:func:`is_image_name`;
    broken symbolic links included: reading them says so) and the other files (folders left out)."""
    if isinstance(folder_or_paths, Path) and folder_or_paths.is_dir():
        paths: Iterable[Path] = sorted(p for p in folder_or_paths.iterdir() if not p.name.startswith("."))
    else:
        paths = [Path(folder_or_paths)] if isinstance(folder_or_paths, (str, Path)) else folder_or_paths
    images, others = [], []
    for path in paths:
        if is_image_name(path):
            images.append(path)
        elif not path.is_dir():
            others.append(path)
    return images, others


def subfolders(folder: Path) -> list[str]:
    """The names of ``folder``'s subfolders, sorted, hidden ones left out (as :func:`image_files` leaves out
    hidden files); none where ``folder`` is not a folder."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class ImageReadError(OSError):
    """An image file that cannot be decoded; the message names the file."""


def read_image(path: Path, max_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Read any common image upright (EXIF orientation applied) as HxWx3 uint8 RGB, and its
    original upright (H, W).

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images are converted. With
    ``max_side``, large JPEGs are decoded at a reduced scale (the original size is still returned).
    """
    img, size = _decode_upright(path, max_side)
    return _to_rgb8(img), size


def read_mask(path: Path) -> tuple[np.ndarray, str | None]:
    """Read a ground-truth mask upright as HxW uint8 whose object is > 128, and how it was read where reading
    it as grey would have lost its object (else None):

    - ``"palette"``: a palette image (VOC's) by its indices, not their colours' grey (VOC's object
      colour (128, 0, 0) is grey 38): index 0 is background, 255 VOC's void border (background here),
      every other index object; a palette whose colours are the greys of their indices is read as grey;
    - ``"labels"``: a label mask whose largest value is 1..128 ({0, 1}, JPEG's {0, 1, 2}; 8- or 16-bit),
      binarised at half that maximum.

    Raises:
        ImageReadError: as :func:`read_gray_checked`.
    """
    img = _decode_upright(path, None)[0]
    if img.mode == "P" and "transparency" not in img.info:
        index = np.asarray(img, dtype=np.uint8)
        used = np.unique(index)
        palette = np.asarray(img.getpalette() or [], np.uint8).reshape(-1, 3)
        if not all(i < len(palette) and (palette[i] == i).all() for i in used):
            labelled = used[(used != 0) & (used != 255)]
            found = np.isin(index, labelled) if labelled.size else index == 255
            return np.where(found, 255, 0).astype(np.uint8), "palette"
    raw = np.asarray(img) if img.mode in ("I;16", "I;16B", "I;16L", "I") else None
    gray = raw.astype(np.uint8) if raw is not None and raw.max() <= 255 else _gray(img)[0]
    if 0 < gray.max() <= 128:
        return np.where(gray.astype(np.uint16) * 2 >= gray.max(), 255, 0).astype(np.uint8), "labels"
    return gray, None


COLOUR_SPREAD = 8.0
"""Mean absolute difference between a map's colour channels (levels) above which it is a colour picture
(a heat map drawn with a colour scale), not a grey map stored as RGB (JPEG leaves under 2)."""


def read_gray_checked(path: Path) -> tuple[np.ndarray, bool]:
    """Read a map (or a mask) upright (EXIF orientation applied) as HxW uint8: colour converted to grey
    (ITU-R 601 luma), 16-bit scaled to 8 by the file's maximum; the alpha channel where the colours are one
    flat colour and the alpha is not (a map drawn as transparency over white or black). Also whether the
    file is a colour picture (its channels differ by more than :data:`COLOUR_SPREAD` on average: a heat
    map, whose grey is not its values).

    Raises:
        ImageReadError: the file is missing, empty or cannot be decoded (an ``OSError``).
    """
    img, _ = _decode_upright(path, None)
    gray, luma = _gray(img)
    if not luma:
        return gray, False
    rgb = np.asarray(img.convert("RGB"), dtype=np.int16)
    return gray, float(np.abs(rgb - rgb[:, :, [1, 2, 0]]).mean()) > COLOUR_SPREAD


def _gray(img: Image.Image) -> tuple[np.ndarray, bool]:
    """:func:`read_gray_checked`'s HxW uint8 of a decoded image, and whether it is the luma of a colour image."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I") and np.asarray(img).max() > 255:
        # by the file's own maximum: a map over part of the 16-bit range (0-1000) keeps its grey levels, and
        # the metrics normalise each map by its own range (masks: 0 and their maximum stay 0 and 255)
        a = np.asarray(img, dtype=np.float64)
        return np.clip(a * (255.0 / a.max()) + 0.5, 0, 255).astype(np.uint8), False
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return np.ascontiguousarray(_to_rgb8(img)[:, :, 0]), False
    alpha = np.asarray(img.getchannel("A"), dtype=np.uint8) if img.mode in ("RGBA", "LA", "PA") else None
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        alpha = np.asarray(img.getchannel("A"), dtype=np.uint8)
    gray = np.ascontiguousarray(np.asarray(img.convert("L"), dtype=np.uint8))
    if alpha is not None and gray.min() == gray.max() and alpha.min() != alpha.max():
        return np.ascontiguousarray(alpha), False
    return gray, img.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr")


def image_sizes(paths: Iterable[Path]) -> list[tuple[int, int]]:
    """(H, W) of each file as stored, from its header without decoding it (the short side is the
    upright image's); files that cannot be opened as images, or are too large, are left out (reading
    them says why)."""
    sizes = []
    for path in paths:
        try:
            with _open(path) as img:
                if img.height * img.width <= MAX_PIXELS:
                    sizes.append((img.height, img.width))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            continue
    return sizes


def _open(path: Path) -> Image.Image:
    """``Image.open`` (the header only) with streamcosal's pixel limit instead of Pillow's: Pillow refuses
    anything over 2 x ``Image.MAX_IMAGE_PIXELS`` (179 megapixels: a 14000x14000 photo) as a
    decompression bomb; the callers refuse what is over :data:`MAX_PIXELS` before decoding it."""
    with _OPENING:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # no warning, no error: the callers check MAX_PIXELS
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def _decode_upright(path: Path, max_side: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """The decoded image turned upright and its upright full (H, W); decoding errors name the file."""
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: empty file (0 bytes)")
        with _open(path) as img:
            size = (img.height, img.width)
            if size[0] * size[1] > MAX_PIXELS:
                raise ImageReadError(
                    f"{path}: {size[1]}x{size[0]} ({size[0] * size[1]:,} pixels) is too large: "
                    f"images of at most {MAX_PIXELS:,} pixels ({MAX_PIXELS // 1_000_000} megapixels) are read; "
                    "shrink it (e.g. to 8000 pixels a side)")
            if max_side is not None and img.format in ("JPEG", "MPO"):
                img.draft("RGB", (max_side, max_side))  # decoded at 1/2, 1/4 or 1/8 scale, no smaller than max_side
            img.load()
            # turned here where the tag is still there after decoding (TIFF's decoder turns the image itself,
            # its opened size already upright, and drops the tag)
            if img.getexif().get(ExifTags.Base.Orientation) in _TRANSPOSED:
                size = size[::-1]
            ImageOps.exif_transpose(img, in_place=True)
    except ImageReadError:
        raise
    except UnidentifiedImageError as err:
        if path.suffix.lower() in PLUGIN_SUFFIXES:
            kind, plugin = PLUGIN_SUFFIXES[path.suffix.lower()]
            raise ImageReadError(f"{path}: {kind} images cannot be read here: Pillow has no {kind} decoder "
                                 f"installed; install {plugin} (pip install {plugin.split(',')[0]}) or convert "
                                 "the file (e.g. to JPEG or PNG)") from err
        raise ImageReadError(f"{path}: cannot decode image ({err.__class__.__name__}: {err}); "
                             "the file is truncated, corrupted or not an image") from err
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"{path}: cannot decode image ({err.__class__.__name__}: {err}); "
                             "the file is truncated, corrupted or not an image") from err
    return img, size


def _to_rgb8(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if a.max() > 255 else 255.0  # 16-bit files holding 8-bit values (0/1 label masks) keep them
        gray = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float32)
        gray = cv2.normalize(a, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def resize(array: np.ndarray, width: int, height: int, *, nearest: bool = False) -> np.ndarray:
    """cv2 resize: nearest for masks, area when shrinking, bilinear when enlarging."""
    if nearest:
        mode = cv2.INTER_NEAREST
    elif width < array.shape[1] or height < array.shape[0]:
        mode = cv2.INTER_AREA
    else:
        mode = cv2.INTER_LINEAR
    return cv2.resize(array, (width, height), interpolation=mode)
