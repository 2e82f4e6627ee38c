"""A streamline autoencoder: 1D convolutions over streamlines of ``nb_points`` points."""
from __future__ import annotations

from torch import Tensor, nn

from dwiml.errors import DwimlError


class StreamlineAutoencoder(nn.Module):
    """Encodes each streamline (``nb_points`` points) into ``latent_size`` values and decodes it back.

    Encoder: per ``channels`` entry, a 1D convolution of stride 2 (about halving the points)
    and ReLU, then a linear layer to the latent vector. Decoder: the mirror image, with
    linear upsampling back to each encoder length, then a convolution to the 3 coordinates.
    The loss is the mean squared distance between reconstructed and target points.
    """

    def __init__(self, input_size: int = 3, nb_points: int = 32, latent_size: int = 32,
                 channels: list[int] | tuple[int, ...] = (32, 64), kernel_size: int = 3):
        super().__init__()
        if input_size != 3:
            raise DwimlError(f"the streamline autoencoder reconstructs points (3 values), got input size "
                             f"{input_size}: use step=streamlines")
        if not channels or kernel_size % 2 == 0:
            raise DwimlError("model.channels must not be empty and model.kernel_size must be odd")
        self.nb_points = nb_points
        widths = [nb_points]
        for _ in channels:
            widths.append((widths[-1] - 1) // 2 + 1)  # stride 2, "same" padding
        pad = kernel_size // 2
        encoder: list[nn.Module] = []
        for a, b in zip([3, *channels[:-1]], channels):
            encoder += [nn.Conv1d(a, b, kernel_size, stride=2, padding=pad), nn.ReLU()]
        self.encoder = nn.Sequential(*encoder, nn.Flatten(), nn.Linear(channels[-1] * widths[-1], latent_size))
        decoder: list[nn.Module] = [nn.Linear(latent_size, channels[-1] * widths[-1]),
                                    nn.Unflatten(1, (channels[-1], widths[-1]))]
        for a, b, width in zip(channels[::-1], [*channels[-2::-1], channels[0]], widths[-2::-1]):
            decoder += [nn.Upsample(size=width, mode="linear"), nn.Conv1d(a, b, kernel_size, padding=pad), nn.ReLU()]
        self.decoder = nn.Sequential(*decoder, nn.Conv1d(channels[0], 3, kernel_size, padding=pad))

    def encode(self, points: Tensor, lengths: Tensor) -> Tensor:
        """``(B, latent_size)``: the latent vector of each streamline."""
        if bool((lengths != self.nb_points).any()):
            raise DwimlError(f"the streamline autoencoder needs streamlines of model.nb_points={self.nb_points} "
                             f"points, got lengths {sorted(set(lengths.tolist()))}: set loader.nb_points")
        return self.encoder(points.reshape(len(lengths), self.nb_points, 3).transpose(1, 2))

    def decode(self, latent: Tensor) -> Tensor:
        """Packed reconstructed points ``(B * nb_points, 3)``."""
        return self.decoder(latent).transpose(1, 2).reshape(-1, 3)

    def forward(self, points: Tensor, lengths: Tensor) -> Tensor:
        return self.decode(self.encode(points, lengths))

    def compute_loss(self, outputs: Tensor, target_points: Tensor) -> tuple[Tensor, int]:
        """Mean squared distance (voxels²) over points, and the number of points."""
        return ((outputs - target_points) ** 2).sum(dim=1).mean(), len(target_points)
