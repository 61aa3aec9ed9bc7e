"""Read any supported image file as one grayscale float array, and write PNGs safely.

Everything downstream works on float32 (H, W) arrays in [0, 1], so this module is the one
place that knows about file formats, bit depths and colour modes:

* DICOM (``.dcm``/``.dicom``, or any file with ``DICM`` at byte 128, as clinical exports often
  carry no suffix) goes to :func:`medrobust.data.dicom.read_dicom` (modality LUT, windowing,
  MONOCHROME1).
* Everything else goes through Pillow: 8-bit and 16-bit grayscale, palette, RGB(A) and
  grayscale-with-alpha (alpha dropped, colour reduced to ITU-R 601-2 luma).

Every problem with a file (missing, empty, not an image, truncated, too large, a pixel
format we cannot map to [0, 1], pixels that decode to NaN or infinity, an image of one flat
value) raises
:class:`~medrobust.data.errors.ImageReadError` with one sentence naming the file, the
problem and the fix, so a dataset can skip the file and the run can go on.

Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never enabled here: a truncated file must
be reported, not silently padded with black. Pillow's global ``MAX_IMAGE_PIXELS`` is left
alone too; the pixel limit is our own, checked from the header before decoding.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from medrobust.data.decoded_pixels import DEFAULT_MAX_PIXELS, check_not_flat, quantize
from medrobust.data.errors import ImageReadError
from medrobust.files.atomic_files import open_atomic

log = logging.getLogger(__name__)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
"""File suffixes (lowercase) that name an image; matching is case-insensitive. A file of any
other name is an image when it is DICOM (:func:`is_image_file`)."""

IMAGE_FILES = f"{', '.join(IMAGE_SUFFIXES)}, or DICOM files of any name"
"""The image files read, as messages name them."""

DICOM_HEAD_BYTES = 132
"""Bytes that say whether a file is DICOM: a 128-byte preamble, then ``DICM`` (PS3.10 7.1)."""

_DICOM_SUFFIXES = (".dcm", ".dicom")
_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"

# Modes whose pixels are 16-bit unsigned integers (any byte order).
_UINT16_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
# Modes that Pillow turns into luma ("L") after dropping any alpha channel.
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr")
_PALETTE_MODES = ("P", "PA")
_GRAY_ALPHA_MODES = ("LA", "La")

_warned_truncated = False


def is_image_name(name: str | os.PathLike[str]) -> bool:
    """True when ``name`` ends in one of :data:`IMAGE_SUFFIXES` (case-insensitive): an image by
    its name alone. Any other file may still be DICOM; :func:`is_image_file` decides."""
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def has_dicom_marker(head: bytes) -> bool:
    """True when ``head`` (a file's first bytes) holds ``DICM`` at byte 128: a DICOM Part 10 file."""
    return head[_DICOM_MAGIC_OFFSET:DICOM_HEAD_BYTES] == _DICOM_MAGIC


def is_image_file(path: str | os.PathLike[str], head: Callable[[], bytes] | None = None) -> bool:
    """Whether ``path`` is an image file medrobust reads: the one rule for folders, uploaded
    archives and file lists alike.

    A name with an image suffix (:func:`is_image_name`) is one without reading anything (a
    broken one is then reported by the reader, not dropped). Any other name is one when its
    first :data:`DICOM_HEAD_BYTES` bytes carry the DICOM marker (clinical exports such as
    ``IM000123`` or ``1.2.840.113619.2.55.3.320`` often have no ``.dcm``): ``head()`` gives them
    when the caller has the bytes (an archive member), else they are read from ``path``. Only
    a regular file is opened (a FIFO would block); one that cannot be read is not an image.
    Hidden files are the caller's to skip.

    Args:
        path: the file.
        head: returns the file's first bytes when the caller has them. Default None: read them.

    Returns:
        True for an image file.
    """
    if is_image_name(path):
        return True
    if head is not None:
        return has_dicom_marker(head())
    try:
        if not Path(path).is_file():
            return False
        with open(path, "rb") as handle:
            return has_dicom_marker(handle.read(DICOM_HEAD_BYTES))
    except OSError:
        return False


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as a float32 (H, W) grayscale array in [0, 1].

    Args:
        path: a PNG, JPEG or DICOM file (DICOM by suffix or by its marker).
        max_pixels: bounds width x height; checked from the file header before any pixel is
            decoded, so an oversized or malicious file costs nothing. Default None:
            :data:`DEFAULT_MAX_PIXELS`.

    Returns:
        The image (the first frame of a multi-frame file), (H, W) float32 in [0, 1].

    Raises:
        ImageReadError: a missing, empty, unreadable, truncated or oversized file, a pixel
            format that has no faithful [0, 1] mapping, a decoded image with any pixel that is
            not a finite number, or an image of one flat value.
    """
    path = Path(path)
    limit = _check_limit(max_pixels)
    head = _read_head(path)
    if path.suffix.lower() in _DICOM_SUFFIXES or has_dicom_marker(head):
        from medrobust.data.dicom import read_dicom

        image = read_dicom(path, max_pixels=limit)
    else:
        image = _read_with_pillow(path, limit)
    _check_finite(image, path)
    check_not_flat(image, path)
    return image


def write_png(path: str | os.PathLike[str], image: Any, bits: int = 8) -> Path:
    """Write an image in [0, 1] as a grayscale PNG of ``bits`` (8 or 16) bits per pixel.

    Values are rounded to the nearest level (``0.502 -> 128`` in 8 bit), not truncated, so a
    read-back is within half a level of the original. Parent folders are created, and the file
    is written to a temporary name in the same folder and then renamed, so a crash never leaves
    a half-written PNG under the final name.

    Args:
        path: the PNG to write.
        image: an (H, W) or (1, H, W) numpy array or torch tensor in [0, 1].
        bits: 8 or 16. Default 8.

    Returns:
        The path written.

    Raises:
        ValueError: ``bits`` is neither 8 nor 16, or an image that is not (H, W) or (1, H, W),
            or not finite in [0, 1].
    """
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16 for a PNG, got {bits}")
    array = quantize(image, bits)
    pil_image = Image.fromarray(array)
    path = Path(path)
    with open_atomic(path) as handle:
        pil_image.save(handle, format="PNG")
    return path


def _check_finite(image: np.ndarray, path: Path) -> None:
    """Refuse an image with NaN or infinite pixels, whatever decoder produced it.

    Every decoder is meant to return [0, 1], but header arithmetic can still overflow (a
    DICOM rescale slope of 1e308 times a stored 4095 is inf); a NaN image would otherwise reach the
    model and come back as "Normal, confidence nan". Checked here because every file goes
    through this function, so datasets skip such a file exactly like a truncated one.
    """
    finite = np.isfinite(image)
    if finite.all():
        return
    bad = image.size - int(np.count_nonzero(finite))
    raise ImageReadError(
        path,
        f"{bad:,} of {image.size:,} pixels are not finite numbers (NaN or infinite) after decoding, most likely "
        "because of a header value of inf or nan or one too large to compute with (a DICOM Rescale "
        "Slope/Intercept or Window Center/Width)",
        "correct the header values or re-export the image as an 8- or 16-bit PNG",
    )


def _check_limit(max_pixels: int | None) -> int:
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    if limit < 1:
        raise ValueError(f"max_pixels must be a positive number of pixels, got {max_pixels}")
    return limit


def _read_head(path: Path) -> bytes:
    """The first :data:`DICOM_HEAD_BYTES` bytes of ``path`` (the DICOM marker), after existence checks."""
    if not path.exists():
        if path.is_symlink():
            raise ImageReadError(path, "broken or looping symbolic link", "remove it or point it at an image")
        raise ImageReadError(path, "file does not exist", "check the path and that the file was copied completely")
    if path.is_dir():
        raise ImageReadError(path, "is a folder, not an image file", "point at an image file inside it")
    try:
        with path.open("rb") as handle:
            head = handle.read(DICOM_HEAD_BYTES)
    except OSError as err:
        raise ImageReadError(path, f"cannot be opened ({err.strerror or err})", "check its permissions") from err
    if not head:
        raise ImageReadError(path, "file is empty (0 bytes)", "re-export or re-download the image")
    return head


def _warn_if_truncated_images_allowed() -> None:
    """Say once if some other module switched Pillow to padding truncated files silently."""
    global _warned_truncated
    if ImageFile.LOAD_TRUNCATED_IMAGES and not _warned_truncated:
        _warned_truncated = True
        log.warning(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES was enabled by another module: truncated files "
            "will be padded with black instead of being reported"
        )


def _read_with_pillow(path: Path, max_pixels: int) -> np.ndarray:
    _warn_if_truncated_images_allowed()
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise _too_large(path, width, height, max_pixels)
            frames = getattr(img, "n_frames", 1)
            if frames > 1:
                log.info("%s has %d frames; using the first", path, frames)
                img.seek(0)
            try:
                img.load()
            except (OSError, SyntaxError, ValueError, EOFError) as err:
                raise ImageReadError(
                    path,
                    f"image data is truncated or corrupt ({err})",
                    "re-export or re-download the file",
                ) from err
            return _to_gray_float(img, path)
    except ImageReadError:
        raise
    except UnidentifiedImageError as err:
        raise ImageReadError(
            path,
            "is not an image file Pillow can read (it may be a text file or an unsupported format)",
            "convert it to PNG, JPEG or DICOM",
        ) from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageReadError(
            path,
            f"is so large that Pillow refuses it as a possible decompression bomb ({err})",
            "downsample the image before using it",
        ) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageReadError(path, f"cannot be read as an image ({err})", "re-export it as PNG, JPEG or DICOM") from err


def _too_large(path: Path, width: int, height: int, max_pixels: int) -> ImageReadError:
    return ImageReadError(
        path,
        f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} pixels",
        "downsample it, or raise max_pixels if you trust this file",
    )


def _to_gray_float(img: Image.Image, path: Path) -> np.ndarray:
    """Map a loaded Pillow image of any supported mode to float32 (H, W) in [0, 1]."""
    mode = img.mode
    if mode == "L":
        return np.asarray(img, dtype=np.float32) / 255.0
    if mode == "1":
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    if mode in _GRAY_ALPHA_MODES:
        return np.asarray(img.getchannel(0), dtype=np.float32) / 255.0
    if mode in _PALETTE_MODES:
        # Through RGBA so palettes with transparency convert without Pillow warnings; alpha is dropped.
        return np.asarray(img.convert("RGBA").convert("RGB").convert("L"), dtype=np.float32) / 255.0
    if mode in _COLOUR_MODES:
        rgb = img.convert("RGB") if mode != "RGB" else img
        return np.asarray(rgb.convert("L"), dtype=np.float32) / 255.0
    if mode in _UINT16_MODES:
        return np.asarray(img).astype(np.float32) / 65535.0
    if mode == "I":
        values = np.asarray(img)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageReadError(
                path,
                f"has 32-bit integer pixels in [{values.min()}, {values.max()}], outside the 16-bit range",
                "export it as an 8- or 16-bit grayscale PNG",
            )
        return values.astype(np.float32) / 65535.0
    if mode == "F":
        values = np.asarray(img, dtype=np.float32)
        if values.size and not (np.all(np.isfinite(values)) and values.min() >= 0.0 and values.max() <= 1.0):
            raise ImageReadError(
                path,
                "has floating-point pixels outside [0, 1], so their grey levels are ambiguous",
                "scale it to [0, 1] or export it as an 8- or 16-bit grayscale PNG",
            )
        return values
    raise ImageReadError(
        path,
        f"has pixel mode {mode!r}, which has no faithful grayscale mapping",
        "export it as an 8- or 16-bit grayscale PNG",
    )
