"""Segmentation backbones (a registry): each builds a ``methods.model.SegModel`` with declared encoder stages."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import torch
from monai.networks.layers import SkipConnection
from monai.networks.nets import BasicUNet, UNet
from torch import nn

from benchmarks.interop import nnunet
from datasets.core.registry import Registry
from methods.model import CheckpointError, SegModel

BackboneFactory = Callable[[int, int], SegModel]
BACKBONES: Registry[BackboneFactory] = Registry("backbone", entry_point_group="ntbench.backbones")


def _monai_unet_encoder(unet: UNet) -> list[str]:
    """Walk MONAI UNet's nested Sequential(down, SkipConnection(...), up) to its down path."""
    downs, node, prefix = [], unet.model, "model"
    while isinstance(node, nn.Sequential) and len(node) == 3 and isinstance(node[1], SkipConnection):
        downs.append(f"{prefix}.0")
        node, prefix = node[1].submodule, f"{prefix}.1.submodule"
    return downs + [prefix]


@BACKBONES.register("unet")
def monai_unet(in_channels: int, num_classes: int) -> SegModel:
    """MONAI residual UNet, channels 16..256 (fast CPU default; Kerfoot et al. 2018)."""
    body = UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=16,
        channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2),
        num_res_units=2,
    )
    return SegModel(body, 16, num_classes, _monai_unet_encoder(body))


@BACKBONES.register("basicunet")
def monai_basicunet(in_channels: int, num_classes: int) -> SegModel:
    """MONAI BasicUNet (Ronneberger et al. 2015 layout), features 16..128."""
    body = BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=16, features=(16, 16, 32, 64, 128, 16))
    body.final_conv = nn.Identity()  # the SegModel head takes its place
    return SegModel(body, 16, num_classes, ["conv_0", "down_1", "down_2", "down_3", "down_4"])


class _SmpBody(nn.Module):
    """smp U-Net without its segmentation head: returns decoder features."""

    def __init__(self, encoder_name: str, in_channels: int) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        net = smp.Unet(
            encoder_name=encoder_name,
            encoder_weights=None,
            in_channels=in_channels,
            classes=1,
            decoder_channels=(128, 64, 32, 16, 16),
        )
        self.encoder, self.decoder = net.encoder, net.decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        return self.decoder(features) if _smp_decoder_takes_list(self.decoder) else self.decoder(*features)


def _smp_decoder_takes_list(decoder: nn.Module) -> bool:
    params = list(inspect.signature(decoder.forward).parameters.values())
    return params[0].kind != inspect.Parameter.VAR_POSITIONAL


@BACKBONES.register("smp-resnet18")
def smp_resnet18(in_channels: int, num_classes: int) -> SegModel:
    """segmentation-models-pytorch U-Net with a timm ResNet-18 encoder (random init)."""
    body = _SmpBody("tu-resnet18", in_channels)
    stages = [n for n, _ in body.encoder.model.named_children() if n.startswith("layer")]
    return SegModel(body, 16, num_classes, ["encoder"], [f"encoder.model.{n}" for n in stages])


@BACKBONES.register("nnunet")
def nnunet_plain(in_channels: int, num_classes: int, size: int = 64) -> SegModel:
    """nnU-Net v2's 2D PlainConvUNet as its default planner configures it for ``size`` slices (Isensee et al. 2021).

    Needs ``pip install 'ntbench[nnunet]'``; deep supervision is off (benchmarks/interop/nnunet.py).
    """
    return nnunet.build(nnunet.default_2d_architecture(size), in_channels, num_classes)


def build_backbone(
    name: str,
    in_channels: int,
    num_classes: int | None,
    checkpoint: str | Path | None = None,
    size: int = 64,
    scratch: bool = False,
) -> SegModel:
    """Instantiate a registered backbone, optionally from a checkpoint (``weights_only=True``).

    The checkpoint is a state dict (or ``{"model": state_dict}``) of the same backbone; a head
    whose class count differs is left freshly initialised, any other mismatch is an error.
    An nnU-Net v2 checkpoint (``.../fold_F/checkpoint_final.pth`` with ``plans.json`` one folder up)
    is a trained source model: it needs ``name == "nnunet"`` and gives the plans' network, with its
    weights unless ``scratch`` (random-init methods then train the same architecture from nnU-Net's
    initialisation); ``num_classes=None`` keeps its trained head. ``size`` is the slice size, passed to
    factories that take it.
    """
    factory = BACKBONES.get(name)
    if checkpoint is not None and is_nnunet_checkpoint(checkpoint):
        if name != "nnunet":
            raise CheckpointError(f"--checkpoint {checkpoint}: an nnU-Net checkpoint needs --backbone nnunet")
        return nnunet.from_checkpoint(checkpoint, in_channels, num_classes, weights=not scratch)
    takes_size = "size" in inspect.signature(factory).parameters
    model = factory(in_channels, num_classes, size=size) if takes_size else factory(in_channels, num_classes)
    if checkpoint is None:
        return model
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"--checkpoint {checkpoint}: unreadable ({' '.join(str(exc).split())[:200]})") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    own = model.state_dict()
    head = {k for k in own if k.startswith("head.")}
    misfit = sorted(
        k
        for k in set(own) | set(state)
        if k not in head and (k not in own or k not in state or own[k].shape != state[k].shape)
    )
    if misfit:
        raise CheckpointError(
            f"--checkpoint {checkpoint}: does not fit backbone {name!r} "
            f"({len(misfit)} tensors differ, e.g. {misfit[0]})"
        )
    fits = {k: v for k, v in state.items() if k not in head or v.shape == own[k].shape}
    model.load_state_dict(fits, strict=False)
    return model


def is_nnunet_checkpoint(path: str | Path) -> bool:
    """An nnU-Net training's layout: a ``.pth`` file with ``plans.json`` one folder above."""
    path = Path(path)
    return path.suffix == ".pth" and (path.parent.parent / "plans.json").is_file()
