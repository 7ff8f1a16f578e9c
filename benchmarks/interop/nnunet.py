"""nnU-Net v2 networks in ntbench: the ``nnunet`` backbone and nnU-Net checkpoints as source models.

Needs the optional extra ``pip install ntbench[nnunet]`` (nnunetv2, dynamic-network-architectures), whose
packages are imported only when the ``nnunet`` backbone or an nnU-Net checkpoint is used. The network is the one
nnU-Net trains (``PlainConvUNet`` or whatever class the plans name) with deep supervision off: ntbench's
loop trains one full-resolution output. Its last segmentation layer becomes the ``SegModel`` head.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from methods.model import BackboneError, CheckpointError, SegModel

EXTRA = "pip install 'ntbench[nnunet]'"
# Classes a plans file may name: nnU-Net's architectures and torch layers, never arbitrary code.
ALLOWED_CLASS_PREFIXES = ("dynamic_network_architectures.architectures.", "torch.nn.")


def require() -> None:
    """Import the nnU-Net packages, or a one-line ``BackboneError`` saying how to install them."""
    try:
        import dynamic_network_architectures  # noqa: F401
        import nnunetv2  # noqa: F401
    except ImportError as exc:
        raise BackboneError(f"--backbone nnunet: needs the nnunet extra ({EXTRA}); {exc}") from None


def default_2d_architecture(size: int) -> dict[str, Any]:
    """The ``architecture`` entry nnU-Net's default planner writes for a 2D ``size`` x ``size`` patch.

    Rule of nnunetv2 ``ExperimentPlanner.get_plans_for_configuration`` (default_experiment_planner.py):
    ``get_pool_and_conv_props(spacing, patch, UNet_featuremap_min_edge_length=4, 999999)`` gives the
    pooling (halve each axis while the feature map stays >= 4 voxels; the patch is padded to a multiple
    of 2^pools) and 3x3 kernels; features 32 * 2^i capped at ``UNet_max_features_2d`` = 512; two convs per
    stage in encoder and decoder; conv bias, InstanceNorm(eps 1e-5, affine), LeakyReLU. Spacing is
    isotropic in-plane: ntbench slices are square. For 64 that is 5 stages, for 192 6, for 240 7 (patch 256).
    """
    require()
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, strides, kernels, _, _ = get_pool_and_conv_props([1.0, 1.0], [size, size], 4, 999999)
    n = len(strides)
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": [min(512, 32 * 2**i) for i in range(n)],
            "conv_op": "torch.nn.modules.conv.Conv2d",
            "kernel_sizes": [list(k) for k in kernels],
            "strides": [list(s) for s in strides],
            "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1),
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


class NnUNetBody(nn.Module):
    """An nnU-Net network without its segmentation layers: decoder features at input resolution.

    Inputs whose sides are not multiples of the total stride are zero-padded (centred, as nnU-Net pads
    an image smaller than its patch) and the features cropped back.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        seg = net.decoder.seg_layers
        self.features = seg[-1].in_channels
        net.decoder.seg_layers = nn.ModuleList([nn.Identity() for _ in seg])  # deep supervision off
        net.decoder.deep_supervision = False
        self.net = net
        strides = np.asarray(net.encoder.strides if hasattr(net.encoder, "strides") else [1]).reshape(-1, 2)
        self.divisor = tuple(int(v) for v in np.prod(strides, axis=0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.divisor[0], (-w) % self.divisor[1]
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        out = self.net(x)
        return out[..., ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w] if ph or pw else out


def _check_architecture(architecture: dict) -> None:
    """Every class the plans name lies in nnU-Net's architectures or torch.nn (plans are data, not code)."""
    names = [architecture["network_class_name"]]
    kwargs = architecture["arch_kwargs"]
    names += [kwargs[k] for k in architecture.get("_kw_requires_import", ()) if kwargs.get(k) is not None]
    for name in names:
        if not isinstance(name, str) or not name.startswith(ALLOWED_CLASS_PREFIXES):
            raise ValueError(f"class {name!r} is not allowed (only {', '.join(ALLOWED_CLASS_PREFIXES)}*)")


def build(architecture: dict, in_channels: int, num_classes: int) -> SegModel:
    """A ``SegModel`` from an nnU-Net ``architecture`` entry (He init as nnU-Net; its last seg layer = head)."""
    require()
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    _check_architecture(architecture)
    net = get_network_from_plans(
        architecture["network_class_name"],
        architecture["arch_kwargs"],
        architecture["_kw_requires_import"],
        in_channels,
        num_classes,
        allow_init=True,
        deep_supervision=False,
    )
    if not hasattr(net, "encoder") or not hasattr(net.encoder, "stages") or not hasattr(net.decoder, "seg_layers"):
        raise KeyError(f"encoder.stages / decoder.seg_layers of {architecture['network_class_name']}")
    seg = net.decoder.seg_layers[-1]
    body = NnUNetBody(net)
    model = SegModel(
        body,
        body.features,
        num_classes,
        ["net.encoder"],
        [f"net.encoder.stages.{i}" for i in range(len(net.encoder.stages))],
    )
    model.head.load_state_dict(seg.state_dict())  # nnU-Net's own initialisation of its output layer
    return model


def _safe_globals() -> list:
    """The non-tensor types an nnU-Net v2 checkpoint pickles besides plain containers.

    Found by listing the GLOBAL opcodes of a ``checkpoint_final.pth`` written by ``nnUNetTrainer``:
    numpy scalars and dtypes (the logger's floats) and ``torch.device`` (the trainer's init args).
    """
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray.scalar, np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32)), torch.device]


def _load_json(path: Path, option: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{option}: {path} unreadable ({' '.join(str(exc).split())[:160]})") from None


def from_checkpoint(path: str | Path, in_channels: int, num_classes: int | None, weights: bool = True) -> SegModel:
    """Rebuild an nnU-Net v2 2D training's network from its plans and load its weights (``weights_only``).

    ``path`` is ``.../TRAINER__PLANS__CONFIG/fold_F/checkpoint_*.pth``, with ``plans.json`` and
    ``dataset.json`` in the folder above. A ``num_classes`` other than the training's re-initialises the
    head (``None`` keeps the trained one); ``weights=False`` gives the same architecture with nnU-Net's
    random initialisation (scratch).
    """
    path = Path(path)
    option = f"--checkpoint {path}"
    require()
    plans = _load_json(path.parent.parent / "plans.json", option)
    dataset = _load_json(path.parent.parent / "dataset.json", option)
    try:
        with torch.serialization.safe_globals(_safe_globals()):  # no pickled code runs
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign or damaged files
        raise CheckpointError(f"{option}: unreadable ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{option}: missing key network_weights (not an nnU-Net checkpoint)")
    try:
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        config_name = state["init_args"]["configuration"]
        raw = plans["configurations"].get(config_name)
        if raw is None or not ({"architecture", "inherits_from"} & set(raw)):
            missing = "" if raw is None else ".architecture"
            raise KeyError(f"configurations.{config_name}{missing} (plans.json)")
        config = PlansManager(plans).get_configuration(config_name).configuration  # resolves inherits_from
        architecture = config["architecture"]
        if len(config["patch_size"]) != 2:
            raise CheckpointError(f"{option}: configuration {config_name!r} is 3D; ntbench needs a 2D training")
        labels = dataset["labels"]
        if any(isinstance(v, (list, tuple)) for v in labels.values()):
            raise CheckpointError(f"{option}: region-based training (dataset.json labels); ntbench needs classes")
        trained_classes = len([k for k in labels if k != "ignore"])
        weights_state = state["network_weights"]
        model = build(architecture, in_channels, trained_classes)
    except CheckpointError:
        raise
    except KeyError as exc:
        raise CheckpointError(f"{option}: missing key {exc.args[0]}") from None
    except (TypeError, ValueError, ImportError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"{option}: plans do not build a network ({' '.join(str(exc).split())[:160]})") from None
    if weights:
        _load_weights(model, weights_state, option)
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_head(num_classes)
    return model


def _load_weights(model: SegModel, weights: dict, option: str) -> None:
    """nnU-Net's state dict into the SegModel: ``X`` -> ``body.net.X``, its last seg layer -> ``head``."""
    seg = sorted({k.split(".")[2] for k in weights if k.startswith("decoder.seg_layers.")}, key=int)
    if not seg:
        raise CheckpointError(f"{option}: missing key decoder.seg_layers (network_weights)")
    mapped = {}
    for key, value in weights.items():
        if key.startswith(f"decoder.seg_layers.{seg[-1]}."):
            mapped["head." + key.rsplit(".", 1)[1]] = value
        elif not key.startswith("decoder.seg_layers."):  # deep-supervision outputs: not in ntbench's loop
            mapped["body.net." + key] = value
    own = model.state_dict()
    missing = sorted(set(own) - set(mapped))
    if missing:
        raise CheckpointError(f"{option}: missing key {missing[0][len('body.net.') :]} (network_weights)")
    misfit = sorted(k for k in mapped if k not in own or own[k].shape != mapped[k].shape)
    if misfit:
        raise CheckpointError(f"{option}: network_weights do not fit the plans' network (e.g. {misfit[0]})")
    model.load_state_dict(mapped)
