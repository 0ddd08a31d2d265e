"""ResNet backbones (He et al., 2016) returning C3, C4, C5.

Parameter names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so the
``resnet{18,34,50,101,152}-*.pth`` files users already have load directly.

Normalisation is a choice (``norm``):
- ``frozen_bn``: BatchNorm with fixed statistics and affine parameters (the paper's choice with
  ImageNet weights; from scratch it is the identity at initialisation).
- ``frozen_stats_bn``: BatchNorm whose statistics stay fixed (always in evaluation mode) while
  its scale and shift train: what the original pytorch-retinanet's ``freeze_bn`` gives. From
  scratch it is an unnormalised network with a learnable per-channel scale and shift.
- ``bn``: ordinary trainable BatchNorm.
- ``gn``: GroupNorm with 32 groups, independent of the batch size.
"""
import functools
import pickle

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

NORM_CHOICES = ("frozen_bn", "frozen_stats_bn", "bn", "gn")
# depth -> (block type, blocks per stage)
RESNET_LAYOUTS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


class FrozenStatsBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with its running statistics and never updates them;
    weight and bias still train. Same parameter names as BatchNorm2d, so BN weights load."""

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def make_norm(norm, channels, eps=1e-5):
    """``eps``: the BatchNorm epsilon (torchvision loads its first COCO RetinaNet with 0)."""
    if norm == "bn":
        return nn.BatchNorm2d(channels, eps=eps)
    if norm == "frozen_stats_bn":
        return FrozenStatsBatchNorm2d(channels, eps=eps)
    if norm == "frozen_bn":
        return FrozenBatchNorm2d(channels, eps=eps)
    if norm == "gn":
        return nn.GroupNorm(32, channels)
    raise ValueError(f"unknown norm {norm!r}; choose one of {NORM_CHOICES}")


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, channels, stride, norm):
        """norm: a function channels -> normalisation layer."""
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = norm(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, channels * self.expansion, stride, norm)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels, channels, stride, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = norm(channels)
        # Stride on the 3x3 convolution (ResNet v1.5), as torchvision's weights expect.
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = norm(channels)
        self.conv3 = nn.Conv2d(channels, channels * self.expansion, 1, bias=False)
        self.bn3 = norm(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, channels * self.expansion, stride, norm)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class StemMaxPool(nn.Module):
    """3x3 stride-2 max pooling. On the CPU, PyTorch's kernel for channels-first tensors is
    more than ten times slower than its channels-last kernel (measured: 47 ms against 3 ms for
    8x64x112x128), so the pooling runs channels-last there; the result is identical."""

    def forward(self, x):
        if x.device.type != "cpu" or x.is_contiguous(memory_format=torch.channels_last):
            return F.max_pool2d(x, 3, 2, 1)
        return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 3, 2, 1).contiguous()


def _shortcut(in_channels, out_channels, stride, norm):
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), norm(out_channels))


class ResNet(nn.Module):
    """ResNet trunk; ``forward`` returns [C3, C4, C5] with strides 8, 16, 32."""

    def __init__(self, depth, norm="frozen_bn", bn_eps=1e-5):
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"unsupported ResNet depth {depth}; choose one of {sorted(RESNET_LAYOUTS)}")
        block_kind, blocks_per_stage = RESNET_LAYOUTS[depth]
        block = BasicBlock if block_kind == "basic" else Bottleneck
        self.depth = depth
        norm = functools.partial(make_norm, norm, eps=bn_eps)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = StemMaxPool()
        in_channels = 64
        for stage, (channels, num_blocks) in enumerate(zip((64, 128, 256, 512), blocks_per_stage), start=1):
            layers = []
            for index in range(num_blocks):
                stride = 2 if stage > 1 and index == 0 else 1
                layers.append(block(in_channels, channels, stride, norm))
                in_channels = channels * block.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        self.out_channels = tuple(c * block.expansion for c in (128, 256, 512))
        self._init_weights(block)

    def _init_weights(self, block):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # Zero the last trainable norm of each residual branch so every block starts as the
        # identity, which helps deep ResNets train from scratch (Goyal et al., 2017). Frozen
        # norms are left alone: a zero there could never move again.
        for module in self.modules():
            if isinstance(module, block):
                last_norm = module.bn3 if isinstance(module, Bottleneck) else module.bn2
                if isinstance(last_norm, (nn.BatchNorm2d, nn.GroupNorm)):
                    nn.init.zeros_(last_norm.weight)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]


# Backbone stages from the top, as torchvision's ``trainable_backbone_layers`` counts them.
STAGES_FROM_TOP = ("layer4", "layer3", "layer2", "layer1", "conv1")


def freeze_stages(backbone, trainable_layers):
    """Train only the top ``trainable_layers`` stages (0-5) of ``backbone``: 3 trains layer2-4 and
    freezes the stem and layer1, torchvision's choice for fine-tuning; 5 trains everything.
    Returns the number of frozen parameters."""
    if not 0 <= trainable_layers <= len(STAGES_FROM_TOP):
        raise ValueError(f"trainable_layers must be from 0 to {len(STAGES_FROM_TOP)}, got {trainable_layers}")
    trainable = list(STAGES_FROM_TOP[:trainable_layers]) + (["bn1"] if trainable_layers == 5 else [])
    frozen = 0
    for name, parameter in backbone.named_parameters():
        if name.split(".")[0] not in trainable:
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen


class PretrainedWeightsError(ValueError):
    """A ``--pretrained`` file is unreadable, not a state dict of tensors, or of another ResNet."""


def load_pretrained_backbone(backbone, path):
    """Load torchvision-layout ResNet weights from a local file into ``backbone``.

    Returns (missing_keys, unexpected_keys). Raises PretrainedWeightsError, with a one-line
    message naming the file, when it cannot be read safely or does not fit the backbone's depth
    (shape mismatches or almost nothing in common).
    """
    state = read_pretrained_state(path)
    _check_fits(state, backbone.state_dict(), backbone.depth, path)
    result = backbone.load_state_dict(state, strict=False)
    return list(result.missing_keys), list(result.unexpected_keys)


def check_pretrained_file(path, depth, norm="frozen_bn"):
    """Raise PretrainedWeightsError unless ``path`` holds weights for a ResNet-``depth`` backbone.

    What ``load_pretrained_backbone`` checks, without building real weights (the backbone is
    laid out on the meta device), so a command line can be refused before a run starts.
    """
    state = read_pretrained_state(path)
    with torch.device("meta"):
        own = ResNet(depth, norm).state_dict()
    _check_fits(state, own, depth, path)


def read_pretrained_state(path):
    """The state dict {name: tensor} of a weights file, ``module.`` prefixes and ``fc.*`` removed.

    A checkpoint of this project (a dict with ``model``) gives its model's weights.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise PretrainedWeightsError(f"{path}: refused to load: the file holds Python objects other than tensors, "
                                     f"or it is corrupt ({describe_load_error(error)})") from None
    except Exception as error:  # damaged or foreign files fail in many ways (EOFError, KeyError, zip errors...)
        raise PretrainedWeightsError(f"{path}: not a readable file of ResNet weights ({describe_load_error(error)})"
                                     ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise PretrainedWeightsError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    wrong = [key for key, value in state.items() if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if wrong:
        raise PretrainedWeightsError(f"{path}: expected a state dict of tensors, but {len(wrong)} entries are not "
                                     f"named tensors (e.g. {str(wrong[0])[:60]!r})")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    return {key: value for key, value in state.items() if not key.startswith("fc.")}


def describe_load_error(error):
    """Why ``torch.load(weights_only=True)`` failed, in one line, without torch's advice to retry
    with ``weights_only=False`` (which would run whatever code the file holds)."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        after = [line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()]
        if after and not after[0].startswith("Check the documentation"):
            return after[0].split(" Please use `torch.serialization", 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    if isinstance(error, pickle.UnpicklingError):
        return lines[0] if lines else "not plain tensors and data"
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _check_fits(state, own, depth, path):
    """Raise PretrainedWeightsError unless ``state`` fits ``own``, a ResNet-``depth`` state dict."""
    file_blocks, own_blocks = _blocks_per_stage(state), _blocks_per_stage(own)
    if file_blocks != own_blocks:
        raise PretrainedWeightsError(
            f"{path} does not fit a ResNet-{depth} backbone: it has {file_blocks} residual blocks per "
            f"stage where ResNet-{depth} has {own_blocks}; pass the weights of the same depth"
        )
    mismatched = [
        f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}"
        for key, value in state.items() if key in own and own[key].shape != value.shape
    ]
    if mismatched:
        raise PretrainedWeightsError(
            f"{path} does not fit a ResNet-{depth} backbone ({len(mismatched)} shape mismatches, "
            f"e.g. {mismatched[0]}); pass the weights of the same depth"
        )
    common = [key for key in state if key in own]
    if len(common) < len(own) // 2:
        raise PretrainedWeightsError(
            f"{path} shares only {len(common)} of {len(own)} parameter names with a ResNet-{depth} "
            "backbone; it is not a torchvision-layout ResNet of this depth"
        )


def _blocks_per_stage(state):
    """(blocks in layer1, ..., layer4) as named in a state dict's keys."""
    counts = [0, 0, 0, 0]
    for key in state:
        parts = key.split(".")
        if len(parts) > 2 and parts[0] in ("layer1", "layer2", "layer3", "layer4") and parts[1].isdigit():
            stage = int(parts[0][-1]) - 1
            counts[stage] = max(counts[stage], int(parts[1]) + 1)
    return tuple(counts)
