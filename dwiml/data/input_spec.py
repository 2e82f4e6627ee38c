"""What a trained model eats: its input specification, saved beside its weights.

The training step produces an :class:`InputSpec` (the input volume group and what it holds, the
neighbourhood, the streamlines' resampling, the end-of-streamline targets); every model folder
holds it as ``input_spec.json`` (see :mod:`dwiml.models.io`), and tracking, generation validation and
``dwiml-visualize-loss`` read their inputs from it rather than from the training config.

A volume group may declare what it holds (the groups config keys :data:`DECLARATION_KEYS`): SH
coefficients in a basis (``sh_basis``) of an order (``sh_order``), or named channels
(``channel_names``). The declaration is stored in the HDF5 group's attributes and carried into the
spec, so an input in another SH basis is refused even when it has the same number of coefficients.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from dwiml.errors import DwimlError

if TYPE_CHECKING:  # imported where needed: the HDF5 creation workers import this module, not torch
    from dwiml.data.neighborhood import Neighborhood

SH_BASES = ("descoteaux07_legacy", "descoteaux07", "tournier07_legacy", "tournier07")
DECLARATION_KEYS = ("sh_basis", "sh_order", "channel_names")
FORMAT, FORMAT_VERSION = "dwiml-input-spec", 1


@dataclass(frozen=True)
class VolumeDescription:
    """What a volume group holds: its number of features and, when declared, what they are."""

    nb_features: int
    sh_basis: str | None = None
    sh_order: int | None = None
    channel_names: tuple[str, ...] | None = None

    @classmethod
    def from_attrs(cls, attrs: Any) -> VolumeDescription:
        """From the attributes of an HDF5 volume group (see :func:`declaration_attrs`)."""
        names = attrs.get("channel_names")
        return cls(int(attrs["nb_features"]), _str_or_none(attrs.get("sh_basis")),
                   None if attrs.get("sh_order") is None else int(attrs["sh_order"]),
                   None if names is None else tuple(json.loads(names)))

    def mismatches(self, other: VolumeDescription) -> list[str]:
        """How ``other`` differs from this description, on what both sides declare (the feature
        count excepted: see :meth:`InputSpec.check_volume`)."""
        return [f"{key} {getattr(other, key)!r} (the model's: {getattr(self, key)!r})" for key in DECLARATION_KEYS
                if getattr(self, key) is not None and getattr(other, key) is not None
                and getattr(self, key) != getattr(other, key)]


def check_declaration(group: dict, where: str, nb_features: int | None = None) -> None:
    """Check a volume group's declaration (``sh_basis``, ``sh_order`` or ``channel_names``); with
    ``nb_features``, also that it fits the data. The error names the key."""
    basis, order, names = (group.get(key) for key in DECLARATION_KEYS)
    if basis is not None and basis not in SH_BASES:
        raise DwimlError(f"{where}: sh_basis must be one of {', '.join(SH_BASES)}, got {basis!r}")
    if order is not None and not (isinstance(order, int) and not isinstance(order, bool) and order >= 0):
        raise DwimlError(f"{where}: sh_order must be an integer >= 0, got {order!r}")
    if names is not None and not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise DwimlError(f"{where}: channel_names must be a non-empty list of names, got {names!r}")
    if names is not None and (basis is not None or order is not None):
        raise DwimlError(f"{where}: give sh_basis/sh_order (SH coefficients) or channel_names, not both")
    if nb_features is None:
        return
    if order is not None and nb_features not in sh_sizes(order):
        raise DwimlError(f"{where}: sh_order {order} means {' or '.join(map(str, sh_sizes(order)))} coefficients "
                         f"(symmetric or full basis), but the volume has {nb_features} features")
    if names is not None and len(names) != nb_features:
        raise DwimlError(f"{where}: {len(names)} channel_names for a volume of {nb_features} features")


def declaration_attrs(group: dict) -> dict:
    """The HDF5 attributes of a volume group's declaration (only the keys it gives)."""
    attrs = {key: group[key] for key in ("sh_basis", "sh_order") if group.get(key) is not None}
    if group.get("channel_names") is not None:
        attrs["channel_names"] = json.dumps(group["channel_names"])
    return attrs


def sh_sizes(order: int) -> tuple[int, ...]:
    """The numbers of coefficients of an SH order: in a symmetric basis (even orders), in a full basis."""
    symmetric = {(order + 1) * (order + 2) // 2} if order % 2 == 0 else set()
    return tuple(sorted(symmetric | {(order + 1) ** 2}))


@dataclass(frozen=True)
class Resampling:
    """How streamlines are resampled: to steps of ``step_size_mm``, to ``nb_points`` points, or by
    compression with ``compress_mm`` tolerance; none of them: the points are kept."""

    step_size_mm: float | None = None
    nb_points: int | None = None
    compress_mm: float | None = None

    @classmethod
    def from_dict(cls, values: dict) -> Resampling:
        return cls(**{f.name: values.get(f.name) for f in fields(cls)})

    @classmethod
    def from_attrs(cls, attrs: Any) -> Resampling:
        """The creation rule of an HDF5 streamline group (its ``resampling`` attribute)."""
        return cls.from_dict(json.loads(attrs.get("resampling", "{}")))

    def as_dict(self) -> dict:
        """The rule's key and value (``{}`` when the points are kept)."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    def __str__(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.as_dict().items()) or "the points kept as they are"


@dataclass(frozen=True)
class InputSpec:
    """What a model was trained on: everything needed to give it the same inputs again.

    ``resampling`` is the loader's; when it keeps the stored points, the model saw the streamlines
    as the training HDF5 stored them (``stored_resampling``, its creation's rule). ``voxel_sizes_mm``
    are the distinct voxel sizes of the training subjects.
    """

    input_group: str
    volume: VolumeDescription
    neighborhood: Neighborhood
    streamline_group: str
    resampling: Resampling
    stored_resampling: Resampling
    add_eos_target: bool
    voxel_sizes_mm: tuple[tuple[float, float, float], ...]
    dwiml_version: str

    @property
    def input_size(self) -> int:
        """The model's input row: every neighbour's features."""
        return self.volume.nb_features * len(self.neighborhood)

    @property
    def trained_resampling(self) -> Resampling:
        """The resampling of the streamlines the model trained on."""
        return self.resampling if self.resampling.as_dict() else self.stored_resampling

    def loader_resampling(self, stored: Resampling) -> Resampling:
        """The loader's rule giving streamlines stored with ``stored`` the points of training: the
        loader's own, else none when they are stored as in training, else the training creation's.
        An error when the model trained on unresampled points and these are resampled."""
        if self.resampling.as_dict() or stored == self.stored_resampling:
            return self.resampling
        if not self.stored_resampling.as_dict():
            raise DwimlError(f"the model trained on streamlines kept as stored ({self.stored_resampling}), "
                             f"these are stored resampled ({stored}): no rule gives the same points")
        return self.stored_resampling

    def check_volume(self, volume: VolumeDescription, where: str, allow_mismatch: bool = False) -> None:
        """An error when ``volume`` does not fit the model: a feature count that differs (always), or
        another declared SH basis, order or channel names (unless ``allow_mismatch``)."""
        if volume.nb_features != self.volume.nb_features:
            raise DwimlError(f"{where}: the input has {volume.nb_features} features, the model was trained on "
                             f"{self.volume.nb_features} (group '{self.input_group}')")
        differences = self.volume.mismatches(volume)
        if differences and not allow_mismatch:
            raise DwimlError(f"{where}: the input does not match the model's: {'; '.join(differences)} "
                             "(--allow-mismatch to proceed)")

    def step_mismatch(self, step_size_mm: float) -> str | None:
        """How tracking steps of ``step_size_mm`` differ from the training streamlines, None if they do not."""
        trained = self.trained_resampling
        if trained.step_size_mm is not None and abs(trained.step_size_mm - step_size_mm) < 1e-9:
            return None
        return f"tracking steps of {step_size_mm} mm, the model trained on streamlines with {trained}"

    def to_dict(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict, where: str) -> InputSpec:
        """From :meth:`to_dict`'s values; an error naming ``where`` when they are not a spec."""
        if not isinstance(values, dict) or values.get("format") != FORMAT:
            raise DwimlError(f"{where}: not a dwiml input specification (no format '{FORMAT}')")
        from dwiml.data.neighborhood import Neighborhood

        if values.get("format_version", 0) > FORMAT_VERSION:
            raise DwimlError(f"{where}: input specification version {values['format_version']}, newer than this dwiml")
        try:
            volume, neighborhood = values["volume"], values["neighborhood"]
            return cls(
                input_group=str(values["input_group"]),
                volume=VolumeDescription(int(volume["nb_features"]), volume["sh_basis"], volume["sh_order"],
                                         None if volume["channel_names"] is None else tuple(volume["channel_names"])),
                neighborhood=Neighborhood(neighborhood["kind"], neighborhood["radius_mm"],
                                          int(neighborhood["nb_rings"])),
                streamline_group=str(values["streamline_group"]),
                resampling=Resampling.from_dict(values["resampling"]),
                stored_resampling=Resampling.from_dict(values["stored_resampling"]),
                add_eos_target=bool(values["add_eos_target"]),
                voxel_sizes_mm=tuple(tuple(float(v) for v in sizes) for sizes in values["voxel_sizes_mm"]),
                dwiml_version=str(values["dwiml_version"]))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DwimlError(f"{where}: a malformed input specification ({type(e).__name__}: {e})") from None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
