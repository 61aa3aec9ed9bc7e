"""DICOM radiographs to grayscale [0, 1] and back.

Reading follows the DICOM grayscale pipeline (PS3.3 C.11 and PS3.4 N.2.1.1) so the
picture matches what a viewer shows:

1. stored values -> **Modality LUT** (``RescaleSlope``/``RescaleIntercept`` or a Modality
   LUT Sequence), giving modality units;
2. -> **VOI transform**: the first item of a VOI LUT Sequence, else the first Window
   Center/Width (LINEAR, LINEAR_EXACT or SIGMOID, PS3.3 C.11.2.1.2), mapped to [0, 1] by
   the window's output range. Without either, modality values are scaled by the range
   that ``BitsStored``/``PixelRepresentation`` imply after the modality LUT (a 12-bit
   unsigned image with slope 1 is divided by 4095), falling back to the image's own
   min/max if values lie outside it;
3. ``MONOCHROME1`` images are inverted (``1 - x``) so that bright always means dense.

A CT slice (Modality CT, or a Rescale Type of HU) is not a radiograph: its modality values are
Hounsfield units, and it goes to the CT grid instead (:data:`~medrobust.data.stored_grid.CT_HU`,
``x = (HU + 1024) / 4095``, clipped to -1024..3071 HU), with no VOI window: windowing is the
model's (its contract), not the reader's. Radiographs are read exactly as before.

Colour images (3 samples per pixel, or PALETTE COLOR) are reduced to ITU-R 601-2 luma;
multi-frame files give their first frame. A Rescale Slope/Intercept or Window Center/Width
that is not a finite number (``inf``, ``nan``) is refused with its name: it would turn every
pixel into NaN or one flat grey, which a model would classify as confidently as a radiograph.
So is a finite one that flattens the image (a Rescale Slope of 0, an intercept that swamps the
stored values, a window far from them): the image is refused as degenerate, naming the header
values that flattened it. Every failure raises
:class:`~medrobust.data.errors.ImageReadError` naming the file, the problem and the fix, in
one line.

pydicom reports oddities of a file through its loggers (a decoder's failure with a whole
traceback) and as warnings, often both for the same remark. While a file is read they are
captured: they join the file's skip reason when it cannot be read, and otherwise make one
per-image log line, so that neither tracebacks nor doubled warnings reach the terminal.

Writing (:func:`write_dicom`) produces a minimal, valid Secondary Capture object, used by
the tests and to write adversarial images back in the format that reaches a PACS.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.pixels
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from medrobust.data.decoded_pixels import DEFAULT_MAX_PIXELS, check_not_flat, quantize
from medrobust.data.errors import ImageReadError
from medrobust.data.stored_grid import CT_HU
from medrobust.files.atomic_files import open_atomic
from medrobust.logs.per_image_log import per_image_log

log = logging.getLogger(__name__)

_LUMA = np.array([0.299, 0.587, 0.114])
_REEXPORT = "re-export it as an uncompressed DICOM or as a 16-bit PNG"


def read_dicom(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> np.ndarray:
    """Read a DICOM file as a float32 (H, W) array in [0, 1], bright meaning dense (the
    grayscale pipeline of the module docstring).

    Args:
        path: the DICOM file (any name).
        max_pixels: the largest Rows x Columns, checked before the pixel data is decoded.
            Default None: :data:`medrobust.data.decoded_pixels.DEFAULT_MAX_PIXELS`.

    Returns:
        The first frame, (H, W) float32 in [0, 1].

    Raises:
        ImageReadError: the file cannot be read as a radiograph (one line naming the file, the
            problem and the fix; pydicom's remarks joined).
    """
    path = Path(path)
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    remarks: list[str] = []
    try:
        with _pydicom_remarks(remarks):
            image = _read_image(path, limit)
    except ImageReadError as err:
        raise _with_remarks(err, path, remarks) from err.__cause__
    if remarks:
        per_image_log.warning("%s: read, with pydicom's remarks: %s", path, _joined(_unique(remarks)))
    return image


def _read_image(path: Path, limit: int) -> np.ndarray:
    ds = _read_dataset(path)
    try:
        # Overflow from extreme header values becomes inf/NaN, which read_image then refuses by count.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            image = _read_pixels(ds, path, limit)
    except ImageReadError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as err:
        # Header values are parsed lazily, so a malformed one surfaces here.
        raise ImageReadError(path, f"has a malformed image header ({_one_line(err)})", _REEXPORT) from err
    return np.ascontiguousarray(np.clip(image, 0.0, 1.0), dtype=np.float32)


_MAX_REMARK = 300
_SEE_ALSO = re.compile(r"\s*Please see <[^>]*> for [^.]*\.")  # pydicom's pointer to the standard's tables
_remarks: ContextVar[list[str] | None] = ContextVar("medrobust_pydicom_remarks", default=None)


class _CaptureRemarks(logging.Filter):
    """On pydicom's loggers: while a file is read (see :func:`_pydicom_remarks`), a record is
    kept as a one-line remark and goes no further; otherwise it passes unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        remarks = _remarks.get()
        if remarks is None:
            return True
        remarks.append(_one_line(record.getMessage()))
        return False


_CAPTURE = _CaptureRemarks()


@contextmanager
def _pydicom_remarks(remarks: list[str]) -> Iterator[None]:
    """Collect into ``remarks`` what pydicom logs or warns inside the block, instead of showing it.

    A logger's filters see only the records made on that logger, so the filter goes on every
    ``pydicom`` logger that exists (its decoders log on their own module's logger). Warnings are
    recorded with :func:`warnings.catch_warnings`, which, like any use of it, is not thread-safe."""
    for name in ["pydicom", *(n for n in list(logging.root.manager.loggerDict) if n.startswith("pydicom."))]:
        logger = logging.getLogger(name)
        if _CAPTURE not in logger.filters:
            logger.addFilter(_CAPTURE)
    token = _remarks.set(remarks)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                remarks.extend(_one_line(str(w.message)) for w in caught)
    finally:
        _remarks.reset(token)


def _with_remarks(err: ImageReadError, path: Path, remarks: list[str]) -> ImageReadError:
    """``err`` with pydicom's remarks that it does not already say added to the problem."""
    new = [r for r in _unique(remarks) if r not in err.problem]
    if not new:
        return err
    return ImageReadError(path, f"{err.problem} (pydicom: {_joined(new)})", err.fix)


def _unique(remarks: list[str]) -> list[str]:
    return list(dict.fromkeys(r for r in remarks if r))


def _joined(remarks: list[str], shown: int = 2) -> str:
    more = f"; and {len(remarks) - shown} more" if len(remarks) > shown else ""
    return "; ".join(remarks[:shown]) + more


def _one_line(message: object) -> str:
    """An exception's or a remark's text in one line: a traceback pasted into it (pydicom puts
    one into some messages) cut off, the lines joined, at most 300 characters."""
    if isinstance(message, BaseException):
        text = f"{type(message).__name__}: {message}" if str(message) else type(message).__name__
    else:
        text = str(message)
    text = text.split("Traceback (most recent call last)", 1)[0]
    text = _SEE_ALSO.sub("", text)
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return text if len(text) <= _MAX_REMARK else text[: _MAX_REMARK - 3] + "..."


def write_dicom(
    path: str | os.PathLike[str],
    image: Any,
    bits: int = 12,
    window: tuple[float, float] | None = None,
    monochrome1: bool = False,
    slope: float = 1.0,
    intercept: float = 0.0,
) -> Path:
    """Write an (H, W) or (1, H, W) image in [0, 1] as a Secondary Capture DICOM file.

    Pixels are rounded to ``bits`` stored bits (BitsAllocated 8 for ``bits <= 8``, else 16),
    unsigned, uncompressed Explicit VR Little Endian. The stored values are chosen so that
    :func:`read_dicom` returns the image within half a quantisation level when no window
    is written: the inverse of ``slope``/``intercept`` (a negative slope flips the stored
    values) and, for ``monochrome1``, the inverse of the MONOCHROME1 inversion. Written
    atomically.

    Args:
        path: the file to write (parent folders are created).
        image: an (H, W) or (1, H, W) numpy array or torch tensor in [0, 1].
        bits: stored bits, 1 to 16. Default 12.
        window: ``(center, width)`` in modality units (after rescale), written as Window
            Center/Width and then applied by readers. Default None: no window.
        monochrome1: write MONOCHROME1 (bright stored values are dark). Default False.
        slope: Rescale Slope, finite and non-zero. Default 1.0 (not written).
        intercept: Rescale Intercept. Default 0.0 (not written with slope 1).

    Returns:
        The path written.

    Raises:
        ValueError: ``bits`` or ``slope`` out of range, or an image that is not (H, W) or
            (1, H, W), or not finite in [0, 1].
    """
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be between 1 and 16 for a DICOM image, got {bits}")
    if not np.isfinite(slope) or slope == 0:
        raise ValueError(f"slope must be a finite non-zero number, got {slope}")
    levels = quantize(image, bits)
    if monochrome1 != (slope < 0):
        levels = ((1 << bits) - 1 - levels).astype(levels.dtype)
    allocated = 8 if bits <= 8 else 16
    pixel_bytes = levels.astype("<u2" if allocated == 16 else np.uint8).tobytes()
    if len(pixel_bytes) % 2:
        pixel_bytes += b"\x00"  # DICOM values have even length

    ds = new_dataset(SecondaryCaptureImageStorage)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    # Type 2 attributes of the Patient, Study, Series and SC Equipment modules: present, empty.
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "StudyID", "AccessionNumber", "SeriesNumber",
                    "InstanceNumber", "PatientOrientation"):
        setattr(ds, keyword, None)
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = levels.shape
    ds.BitsAllocated = allocated
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if slope != 1.0 or intercept != 0.0:
        ds.RescaleSlope = _ds_number(slope)
        ds.RescaleIntercept = _ds_number(intercept)
        ds.RescaleType = "US"
    if window is not None:
        center, width = window
        ds.WindowCenter = _ds_number(center)
        ds.WindowWidth = _ds_number(width)
    ds.PixelData = pixel_bytes
    ds["PixelData"].VR = "OW" if allocated == 16 else "OB"

    path = Path(path)
    with open_atomic(path) as handle:
        ds.save_as(handle, enforce_file_format=True)
    return path


def new_dataset(sop_class: str) -> Dataset:
    """An empty DICOM object of ``sop_class`` with a new SOP instance UID and its file meta
    (explicit VR little endian), for the writers to fill."""
    sop_instance = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    return ds


def _read_pixels(ds: Dataset, path: Path, limit: int) -> np.ndarray:
    """Check the header (pixel data present, size within ``limit``), decode frame 0, map to [0, 1]."""
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise ImageReadError(path, "has floating-point pixel data, which is not supported", _REEXPORT)
        raise ImageReadError(
            path,
            "has no pixel data (it may be a report, a presentation state or a header-only file)",
            "point at the image DICOM of the study instead",
        )
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 1 or columns < 1:
        raise ImageReadError(path, f"declares an image of {rows}x{columns} pixels", _REEXPORT)
    if rows * columns > limit:
        raise ImageReadError(
            path,
            f"image is {columns}x{rows} = {rows * columns:,} pixels, over the limit of {limit:,} pixels",
            "downsample it, or raise max_pixels if you trust this file",
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        log.info("%s has %d frames; using the first", path, frames)
    pixels = _decode_first_frame(ds, path)
    return _to_unit_range(ds, pixels, path)


def _to_unit_range(ds: Dataset, pixels: np.ndarray, path: Path) -> np.ndarray:
    """Decoded pixels -> [0, 1] by photometric interpretation (colour to luma, MONOCHROME1 inverted)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    bits_stored = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    if pixels.ndim == 3:
        image = _luma(pixels, bits_stored, signed)
    elif photometric == "PALETTE COLOR":
        rgb = pydicom.pixels.apply_color_lut(pixels, ds)
        image = _luma(rgb, 8 * rgb.dtype.itemsize, False)
    elif photometric in ("MONOCHROME1", "MONOCHROME2") and is_ct(ds):
        image = _hounsfield(ds, pixels, signed, path)
    elif photometric in ("MONOCHROME1", "MONOCHROME2"):
        image = _grayscale(ds, pixels, bits_stored, signed, path)
        if photometric == "MONOCHROME1":
            image = 1.0 - image
    else:
        raise ImageReadError(path, f"has an unsupported photometric interpretation {photometric!r}", _REEXPORT)
    return image


def is_ct(ds: Dataset) -> bool:
    """Whether a slice is CT in Hounsfield units: Modality CT, or a Rescale Type of HU."""
    return str(ds.get("Modality", "")).strip().upper() == "CT" or str(ds.get("RescaleType", "")).strip().upper() == "HU"


def _hounsfield(ds: Dataset, pixels: np.ndarray, signed: bool, path: Path) -> np.ndarray:
    """A CT slice on the CT grid: stored values -> HU (Modality LUT or Rescale Slope/Intercept),
    clipped to -1024..3071 HU (the count logged) and mapped linearly to [0, 1]
    (:data:`~medrobust.data.stored_grid.CT_HU`). No window: windows belong to the model's
    contract, so the attacker's budget is in HU whatever the model looks at."""
    values = _apply_modality(ds, pixels, signed, path)
    _keeps_variation(pixels, values, path, lambda: _modality_cause(ds, values))
    clipped, outside = CT_HU.clip_units(values)
    if outside:
        log.info("%s: %d pixel(s) outside %d..%d HU clipped to the CT grid", path, outside, CT_HU.low, CT_HU.high)
    return CT_HU.from_units(clipped)


def _ds_number(value: float) -> str:
    """A Decimal String value (at most 16 characters) for ``value``."""
    text = f"{float(value):.10g}"
    return text if len(text) <= 16 else f"{float(value):.8e}"


def _read_dataset(path: Path) -> Dataset:
    if not path.exists():
        raise ImageReadError(path, "file does not exist", "check the path and that the file was copied completely")
    try:
        return pydicom.dcmread(path, force=False)
    except InvalidDicomError as err:
        raise ImageReadError(
            path,
            "is not a DICOM Part 10 file (no 'DICM' marker after the 128-byte preamble)",
            _REEXPORT,
        ) from err
    except Exception as err:  # pydicom raises many unrelated types for malformed files
        raise ImageReadError(path, f"cannot be parsed as DICOM ({_one_line(err)})", _REEXPORT) from err


def _decode_first_frame(ds: Dataset, path: Path) -> np.ndarray:
    """Decode only the first frame; a missing decoder or broken data becomes ImageReadError."""
    try:
        return pydicom.pixels.pixel_array(ds, index=0)
    except Exception as err:  # decoders raise RuntimeError, NotImplementedError, ValueError...
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if isinstance(syntax, UID) and syntax.is_compressed:
            fix = (
                f"install a decoder for its {syntax.name} transfer syntax "
                "(pylibjpeg with pylibjpeg-libjpeg or pylibjpeg-openjpeg, or python-gdcm), "
                "or re-export it uncompressed"
            )
        else:
            fix = _REEXPORT
        raise ImageReadError(path, f"pixel data cannot be decoded ({_one_line(err)})", fix) from err


def _stored_range(bits: int, signed: bool) -> tuple[float, float]:
    if signed:
        return -float(1 << (bits - 1)), float((1 << (bits - 1)) - 1)
    return 0.0, float((1 << bits) - 1)


def _luma(rgb: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """ITU-R 601-2 luma of an (H, W, 3) array, scaled to [0, 1] by the stored range."""
    lo, hi = _stored_range(bits, signed)
    values = rgb[..., :3].astype(np.float64) @ _LUMA
    return (values - lo) / (hi - lo)


def _modality_range(ds: Dataset, bits: int, signed: bool, path: Path) -> tuple[float, float]:
    """The value range after the modality LUT implied by BitsStored/PixelRepresentation."""
    if ds.get("ModalityLUTSequence"):
        depth = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float((1 << depth) - 1)
    lo, hi = _stored_range(bits, signed)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = _rescale(ds, path)
        lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    return lo, hi


def _grayscale(ds: Dataset, pixels: np.ndarray, bits: int, signed: bool, path: Path) -> np.ndarray:
    """Modality LUT, then VOI LUT or window (or the modality range), giving [0, 1]. A step that
    turns varied values into one flat value is refused, naming the header values it used."""
    values = _apply_modality(ds, pixels, signed, path)
    _keeps_variation(pixels, values, path, lambda: _modality_cause(ds, values))
    if _has_voi_lut(ds):
        image = _apply_voi_lut_sequence(ds, values, signed)
        _keeps_variation(values, image, path, lambda: f"its VOI LUT maps every value to {float(image.flat[0]):.4g}")
        return image
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        image = _apply_window(ds, values, path)
        _keeps_variation(values, image, path, lambda: (
            f"its Window Center {ds.WindowCenter} and Window Width {ds.WindowWidth} leave every pixel "
            f"{'black' if float(image.flat[0]) <= 0 else 'white' if float(image.flat[0]) >= 1 else 'one grey'}"))
        return image
    lo, hi = _modality_range(ds, bits, signed, path)
    if values.size and (values.min() < lo or values.max() > hi):
        log.debug("%s: values exceed the range implied by BitsStored; scaling by the image min/max", path)
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)


def _keeps_variation(before: np.ndarray, after: np.ndarray, path: Path, cause: Callable[[], str]) -> None:
    """Refuse ``after`` as degenerate when one step of the pipeline flattened a varied ``before``
    (values that overflowed to infinity are left to :func:`~medrobust.data.io.read_image`'s count)."""
    if before.size > 1 and after.size and float(before.min()) != float(before.max()) \
            and float(after.min()) == float(after.max()) and math.isfinite(float(after.flat[0])):
        check_not_flat(after, path, cause=cause())


def _modality_cause(ds: Dataset, values: np.ndarray) -> str:
    value = float(values.flat[0])
    if ds.get("ModalityLUTSequence"):
        return f"its Modality LUT maps every stored value to {value:.4g}"
    return (f"its Rescale Slope {ds.RescaleSlope} and Rescale Intercept {ds.RescaleIntercept} map every stored "
            f"value to {value:.4g}")


def _has_voi_lut(ds: Dataset) -> bool:
    sequence = ds.get("VOILUTSequence")
    if not sequence:
        return False
    item = sequence[0]
    return item.get("LUTDescriptor") is not None and item.get("LUTData") is not None


def _apply_modality(ds: Dataset, pixels: np.ndarray, signed: bool, path: Path) -> np.ndarray:
    """Stored values -> modality values: the first Modality LUT, else slope * v + intercept.

    Done by hand (not pydicom's ``apply_modality_lut``) so a LUT whose entries overflow its
    declared bit depth gives values, not an exception, and falls back to min/max scaling.
    """
    values = pixels.astype(np.float64)
    if ds.get("ModalityLUTSequence"):
        return _lookup(ds, ds.ModalityLUTSequence[0], values, signed)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = _rescale(ds, path)
        return values * slope + intercept
    return values


def _rescale(ds: Dataset, path: Path) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) as finite floats."""
    return _finite(ds.RescaleSlope, "Rescale Slope", path), _finite(ds.RescaleIntercept, "Rescale Intercept", path)


def _finite(value: Any, name: str, path: Path) -> float:
    """``value`` as a float, refusing ``inf`` and ``nan`` (a DS element can hold either)."""
    number = float(value)
    if not math.isfinite(number):
        raise ImageReadError(
            path,
            f"has a {name} of {value!s}, not a finite number, so every pixel computed from it would be NaN "
            "or one flat grey",
            f"correct the {name} in the header (or remove it) and re-export the image",
        )
    return number


def _apply_voi_lut_sequence(ds: Dataset, values: np.ndarray, signed: bool) -> np.ndarray:
    """Look values up in the first VOI LUT and scale by its nominal output range (2**depth - 1).

    Done here rather than with pydicom's ``apply_voi`` because that one indexes through an
    array of the LUT's *output* dtype, which wraps for an 8-bit LUT with more than 256 entries.
    """
    if len(ds.VOILUTSequence) > 1:
        log.debug("VOI LUT Sequence has %d items; using the first", len(ds.VOILUTSequence))
    item = ds.VOILUTSequence[0]
    depth = int(item.LUTDescriptor[2])
    return _lookup(ds, item, values, signed) / float((1 << depth) - 1)


def _lookup(ds: Dataset, item: Dataset, values: np.ndarray, signed: bool) -> np.ndarray:
    """Map values through a LUT item (LUT Descriptor + LUT Data, PS3.3 C.11.1.1.1).

    Values below the first mapped value take the first entry, values past the end the last.
    """
    entries, first_mapped = int(item.LUTDescriptor[0]) or 65536, int(item.LUTDescriptor[1])
    if signed and first_mapped > 32767:  # US/SS ambiguity of the descriptor's second value
        first_mapped -= 65536
    raw = item.LUTData
    if isinstance(raw, bytes | bytearray):
        little = getattr(ds, "original_encoding", (None, True))[1] is not False
        lut = np.frombuffer(raw, dtype="<u2" if little else ">u2")
    else:
        lut = np.atleast_1d(np.asarray(raw, dtype=np.int64))
    lut = lut[:entries].astype(np.float64)
    if lut.size == 0:
        raise ValueError("the LUT Data is empty")
    index = np.clip(np.rint(values) - first_mapped, 0, len(lut) - 1).astype(np.int64)
    return lut[index]


def _first(value: Any, name: str, path: Path) -> float:
    """The first of a (possibly multi-valued) window attribute, as a finite float."""
    if not isinstance(value, str | bytes) and hasattr(value, "__len__"):
        if len(value) > 1:
            log.debug("several windows present; using the first")
        value = value[0]
    return _finite(value, name, path)


def _apply_window(ds: Dataset, values: np.ndarray, path: Path) -> np.ndarray:
    """Window Center/Width to [0, 1] (PS3.3 C.11.2.1.2 and C.11.2.1.3, normalised output range)."""
    center, width = _first(ds.WindowCenter, "Window Center", path), _first(ds.WindowWidth, "Window Width", path)
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    bad_width = ImageReadError(
        path,
        f"has an invalid Window Width {width:g} for the {function} VOI function",
        "correct the header or remove Window Center/Width",
    )
    if function == "LINEAR":
        if width < 1:
            raise bad_width
        c, w = center - 0.5, width - 1.0
        if w == 0:
            return (values > c).astype(np.float64)
        return np.clip((values - c) / w + 0.5, 0.0, 1.0)
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise bad_width
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if function == "SIGMOID":
        if width <= 0:
            raise bad_width
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    raise ImageReadError(path, f"has an unsupported VOI LUT Function {function!r}", "use LINEAR, or remove it")
