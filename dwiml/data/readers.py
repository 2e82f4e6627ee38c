"""Checked reading of the files a user brings: NIfTI volumes and tractograms (.trk, .tck, .trx).

Whatever nibabel, dipy or trx cannot read (a truncated or garbage file), and a file that is not what
dwiml takes (a 5D NIfTI, a tractogram whose header does not match the reference), is a one-line
:class:`~dwiml.errors.DwimlError` naming the file.
"""
from __future__ import annotations

import logging
import struct
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from dipy.io.stateful_tractogram import StatefulTractogram
from dipy.io.streamline import load_tractogram
from dipy.io.utils import is_header_compatible
from nibabel.filebasedimages import ImageFileError
from nibabel.streamlines.tractogram_file import DataError, HeaderError

from dwiml.errors import DwimlError

TRACTOGRAM_EXTENSIONS = (".trk", ".tck", ".trx")
VOLUME_EXTENSIONS = (".nii", ".nii.gz")
# What nibabel, dipy and trx raise for a file they cannot read (a truncated .trk: TypeError from numpy).
READ_ERRORS = (OSError, EOFError, ValueError, TypeError, IndexError, KeyError, ImageFileError, HeaderError, DataError,
               zipfile.BadZipFile, zlib.error, struct.error)


def _reason(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def load_nifti(path: str | Path, where: str = "") -> nib.Nifti1Image:
    """The image (header; data read on demand) of a 3D or 4D NIfTI file. ``where`` prefixes the error."""
    path, prefix = Path(path), f"{where}: " if where else ""
    if not path.is_file():
        raise DwimlError(f"{prefix}{path}: no such file")
    if not path.name.endswith(VOLUME_EXTENSIONS):
        raise DwimlError(f"{prefix}{path} is not a NIfTI file ({' or '.join(VOLUME_EXTENSIONS)})")
    try:
        image = nib.load(path)
    except READ_ERRORS as e:
        raise DwimlError(f"{prefix}{path} is not a readable NIfTI file ({_reason(e)})") from None
    if image.ndim not in (3, 4):
        raise DwimlError(f"{prefix}{path} is {image.ndim}D (shape {image.shape}): a volume is 3D or 4D, "
                         "channels on the 4th axis")
    return image


def read_data(image: nib.Nifti1Image, where: str = "") -> np.ndarray:
    """The ``(X, Y, Z, F)`` float32 data of an image from :func:`load_nifti` (a 3D image as one channel)."""
    prefix = f"{where}: " if where else ""
    try:
        data = np.asarray(image.dataobj, dtype=np.float32)
    except READ_ERRORS as e:
        raise DwimlError(f"{prefix}{image.get_filename()} is truncated or corrupt ({_reason(e)})") from None
    return data[..., None] if data.ndim == 3 else data


def read_labels(path: str | Path, what: str = "label volume") -> tuple[nib.Nifti1Image, np.ndarray]:
    """A 3D volume of integer labels >= 0 (0: no region) as int64, and its image."""
    image = load_nifti(path)
    data = read_data(image)
    if data.shape[-1] != 1 or not np.isfinite(data).all() or (data != np.round(data)).any() or (data < 0).any():
        raise DwimlError(f"{path}: a {what} is 3D with integer labels >= 0")
    return image, data[..., 0].astype(np.int64)


def load_tractogram_on(path: str | Path, reference: nib.Nifti1Image | str | Path,
                       where: str = "") -> StatefulTractogram:
    """A tractogram (.trk, .tck, .trx) on the grid of ``reference`` (an image or its file), its header checked
    against it; streamlines leaving the volume are kept (the caller decides)."""
    path, prefix = Path(path), f"{where}: " if where else ""
    if not path.is_file():
        raise DwimlError(f"{prefix}{path}: no such file")
    if path.suffix not in TRACTOGRAM_EXTENSIONS:
        raise DwimlError(f"{prefix}{path} is not a tractogram ({', '.join(TRACTOGRAM_EXTENSIONS)})")
    dipy_log = logging.getLogger("dipy")  # which logs each header difference (our error names the file instead)
    level = dipy_log.level
    dipy_log.setLevel(logging.CRITICAL)
    try:
        if not isinstance(reference, nib.Nifti1Image):
            reference = load_nifti(reference, where)
        sft = load_tractogram(str(path), reference, bbox_valid_check=False)
        matches = sft is not False and is_header_compatible(sft, reference)  # .trx/.tck carry their own header
    except READ_ERRORS as e:
        raise DwimlError(f"{prefix}{path} is not a readable tractogram ({_reason(e)})") from None
    finally:
        dipy_log.setLevel(level)
    if not matches:
        raise DwimlError(f"{prefix}the header of {path} does not match {reference.get_filename()}")
    return sft
