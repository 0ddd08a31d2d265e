"""Starting a detector from another detector's weights.

Two kinds of source:
- torchvision's COCO RetinaNets, ``retinanet_resnet50_fpn`` (v1) and ``retinanet_resnet50_fpn_v2``
  (v2). They are this project's network with other options (``TORCHVISION_VARIANTS``): P6 from
  P5 in v1, GroupNorm in v2's heads but not its FPN, torchvision's anchors, box deltas without
  scaling, BatchNorm epsilon 0 for the v1 COCO weights (as torchvision loads them).
  ``convert_torchvision_state`` renames their tensors to ours and keeps the classifier rows of
  the 80 COCO classes (torchvision's 91 outputs include the background and 10 unused ids).
- a checkpoint of this project trained on any class list.

``transfer_weights`` loads every tensor of the source except the classifier's output layer, whose
rows are copied for the classes that have the same name in both lists (compared without case,
spaces, ``_`` or ``-``); the other classes keep the fresh initialisation (the prior).
"""
import re

import torch

# Options that rebuild each torchvision variant exactly (see retinanet.RetinaNet).
TORCHVISION_VARIANTS = {
    "v1": {"depth": 50, "norm": "frozen_bn", "head_norm": "none", "fpn_norm": "none", "fpn_channels": 256,
           "p6_from": "p5", "anchor_layout": "torchvision", "box_coding_std": [1.0, 1.0, 1.0, 1.0], "bn_eps": 0.0},
    "v2": {"depth": 50, "norm": "frozen_bn", "head_norm": "gn", "fpn_norm": "none", "fpn_channels": 256,
           "p6_from": "c5", "anchor_layout": "torchvision", "box_coding_std": [1.0, 1.0, 1.0, 1.0], "bn_eps": 1e-5},
}
# torchvision's weight names for each variant, and the name of its COCO weights.
TORCHVISION_WEIGHTS = {"v1": "RetinaNet_ResNet50_FPN_Weights", "v2": "RetinaNet_ResNet50_FPN_V2_Weights"}
TORCHVISION_SOURCE_NAMES = {"torchvision-coco-v1": "v1", "torchvision-coco-v2": "v2"}
CLASSIFIER_KEYS = ("classification_head.logits.weight", "classification_head.logits.bias")
_UNUSED_COCO_NAMES = ("__background__", "N/A")


class TransferError(ValueError):
    """Source weights that do not fit: not a torchvision RetinaNet, or another network."""


def torchvision_weights(variant):
    """torchvision's COCO weights entry (url, categories) for ``v1`` or ``v2``."""
    from torchvision.models import detection
    return getattr(detection, TORCHVISION_WEIGHTS[variant]).COCO_V1


def coco_classes():
    """(80 class names, their COCO category ids), from torchvision's weights metadata."""
    categories = torchvision_weights("v1").meta["categories"]
    kept = [(name, index) for index, name in enumerate(categories) if name not in _UNUSED_COCO_NAMES]
    return [name for name, _ in kept], [index for _, index in kept]


def is_torchvision_state(state):
    return any(key.startswith("backbone.body.") for key in state) and any(key.startswith("head.") for key in state)


def torchvision_variant(state):
    """``v1`` or ``v2`` for a torchvision RetinaNet state dict: v2 has GroupNorm in its heads."""
    if not is_torchvision_state(state):
        raise TransferError("not a torchvision RetinaNet state dict (no backbone.body.* and head.* tensors)")
    return "v2" if "head.classification_head.conv.0.1.weight" in state else "v1"


_TOWER = re.compile(r"head\.(classification|regression)_head\.conv\.(\d+)\.([01])\.(weight|bias)")
_FPN = re.compile(r"backbone\.fpn\.(inner|layer)_blocks\.(\d)\.0\.(weight|bias)")


def _our_name(name, tower_step):
    """Our parameter name for a torchvision RetinaNet's; None for its BatchNorm batch counters."""
    if name.endswith("num_batches_tracked"):
        return None
    if name.startswith("backbone.body."):
        return "backbone." + name[len("backbone.body."):]
    if match := _FPN.fullmatch(name):
        kind, index, param = match.groups()
        return f"fpn.{'lateral' if kind == 'inner' else 'output'}.{index}.{param}"
    if match := re.fullmatch(r"backbone\.fpn\.extra_blocks\.(p6|p7)\.(weight|bias)", name):
        return f"fpn.{match.group(1)}.{match.group(2)}"
    if match := _TOWER.fullmatch(name):
        head, layer, part, param = match.groups()
        return f"{head}_head.tower.{int(layer) * tower_step + int(part)}.{param}"
    replacements = {"head.classification_head.cls_logits.": "classification_head.logits.",
                    "head.regression_head.bbox_reg.": "regression_head.deltas."}
    for prefix, ours in replacements.items():
        if name.startswith(prefix):
            return ours + name[len(prefix):]
    raise TransferError(f"not a torchvision RetinaNet state dict: unexpected tensor {name}")


def convert_torchvision_state(state, variant=None):
    """A torchvision RetinaNet state dict -> (our state dict, 80 COCO class names, their category ids,
    model options). ``variant`` (v1 or v2) is recognised from the tensors when None."""
    found = torchvision_variant(state)
    if variant is not None and variant != found:
        raise TransferError(f"the weights are torchvision's RetinaNet {found}, not {variant}")
    tower_step = 3 if found == "v2" else 2  # (conv, GroupNorm, ReLU) or (conv, ReLU)
    converted = {}
    for name, tensor in state.items():
        ours = _our_name(name, tower_step)
        if ours is not None:
            converted[ours] = tensor
    class_names, category_ids = coco_classes()
    total = max(category_ids) + 1
    for key in CLASSIFIER_KEYS:
        if converted[key].shape[0] % total:
            raise TransferError(f"{key}: {converted[key].shape[0]} outputs is not a multiple of COCO's {total} "
                                "classes; this is not a COCO RetinaNet")
        converted[key] = select_class_rows(converted[key], total, category_ids)
    return converted, class_names, category_ids, dict(TORCHVISION_VARIANTS[found], prior=0.01)



def random_torchvision_model(variant, min_size=800, max_size=1333, seed=0):
    """torchvision's own RetinaNet ``variant`` with random weights made to detect, for checks that
    download nothing: BatchNorm statistics drawn at random (epsilon 0 for v1, as torchvision loads
    its v1 COCO weights), the classifier's bias spread so that scores cross 0.05, the outputs of
    COCO's unused ids silenced (the import keeps the 80 real classes)."""
    from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2

    torch.manual_seed(seed)
    builder = retinanet_resnet50_fpn if variant == "v1" else retinanet_resnet50_fpn_v2
    model = builder(weights=None, weights_backbone=None, min_size=min_size, max_size=max_size)
    generator = torch.Generator().manual_seed(seed + 1)
    unused = sorted(set(range(91)) - set(coco_classes()[1]))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
                if variant == "v1":
                    module.eps = 0.0
        classifier = model.head.classification_head.cls_logits
        classifier.bias.normal_(-2.0, 0.5, generator=generator)
        classifier.bias.view(-1, 91)[:, unused] = -30.0
        model.head.regression_head.bbox_reg.weight.normal_(0, 0.01, generator=generator)
    return model.eval()

def compare_with_torchvision(model, state, variant, category_ids, size=(480, 640), seed=0):
    """Run the imported ``model`` and torchvision's own RetinaNet ``variant`` holding ``state`` on one
    random image of ``size`` (height, width; by default sides not divisible by 128, where anchor
    placement matters) in float32, and return {"anchors_equal": bool, "max_score_logit_diff": float,
    "max_box_delta_diff": float}: what the two networks compute before decoding."""
    from torchvision.models.detection import image_list, retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2

    builder = retinanet_resnet50_fpn if variant == "v1" else retinanet_resnet50_fpn_v2
    reference = builder(weights=None, weights_backbone=None).eval()
    reference.load_state_dict(state)
    if variant == "v1":  # what torchvision does when it loads its own v1 COCO weights
        for module in reference.modules():
            if hasattr(module, "eps") and "BatchNorm" in type(module).__name__:
                module.eps = 0.0
    height, width = size
    generator = torch.Generator().manual_seed(seed)
    images = reference.transform.normalize(torch.rand(3, height, width, generator=generator))[None]
    model = model.float().eval()
    with torch.no_grad():
        features = list(reference.backbone(images).values())
        head = reference.head(features)
        anchors = reference.anchor_generator(image_list.ImageList(images, [(height, width)]), features)[0]
        ours = model(images)
    return {"anchors_equal": bool(torch.equal(ours["anchors"], anchors)),
            "max_score_logit_diff": float((ours["cls_logits"] - head["cls_logits"][:, :, list(category_ids)]).abs().max()),
            "max_box_delta_diff": float((ours["box_deltas"] - head["bbox_regression"]).abs().max())}


def select_class_rows(tensor, num_classes, indices):
    """Rows of a classifier output (A * num_classes, ...) for the classes ``indices``, per anchor:
    -> (A * len(indices), ...)."""
    per_anchor = tensor.reshape(-1, num_classes, *tensor.shape[1:])
    return per_anchor[:, list(indices)].reshape(-1, *tensor.shape[1:]).clone()


def normalise_class_name(name):
    return re.sub(r"[\s_\-]+", "", str(name)).lower()


def match_classes(target_names, source_names):
    """[(target index, source index)] for the target classes whose name the source has too."""
    source_index = {}
    for index, name in enumerate(source_names):
        source_index.setdefault(normalise_class_name(name), index)
    return [(index, source_index[normalise_class_name(name)]) for index, name in enumerate(target_names)
            if normalise_class_name(name) in source_index]


def transfer_weights(model, state, source_names, target_names):
    """Load ``state`` (a detector of ``source_names``) into ``model`` (built for ``target_names``
    with the same network options). Every tensor loads except the classifier output, whose rows
    are copied for the classes found in both lists. Returns [(target name, source name)] carried.

    Raises TransferError when anything else does not fit (another network)."""
    own = model.state_dict()
    body = {key: value for key, value in state.items() if key not in CLASSIFIER_KEYS}
    mismatched = [f"{key}: source {tuple(value.shape)} vs model {tuple(own[key].shape)}"
                  for key, value in body.items() if key in own and own[key].shape != value.shape]
    missing = [key for key in own if key not in body and key not in CLASSIFIER_KEYS]
    unexpected = [key for key in body if key not in own]
    if mismatched or missing or unexpected:
        first = (mismatched or missing or unexpected)[0]
        raise TransferError(f"the source weights are another network ({len(mismatched)} tensors of another shape, "
                            f"{len(missing)} missing, {len(unexpected)} unexpected; first: {first})")
    model.load_state_dict(body, strict=False)
    matches = match_classes(target_names, source_names)
    logits = model.classification_head.logits
    with torch.no_grad():
        for key, parameter in (("weight", logits.weight), ("bias", logits.bias)):
            source = state[f"classification_head.logits.{key}"]
            source_rows = source.reshape(-1, len(source_names), *source.shape[1:])
            target_rows = parameter.view(-1, len(target_names), *parameter.shape[1:])
            if source_rows.shape[0] != target_rows.shape[0]:
                raise TransferError(f"the source has {source_rows.shape[0]} anchors per location, the model "
                                    f"{target_rows.shape[0]}")
            for target, source_index in matches:
                target_rows[:, target] = source_rows[:, source_index]
    return [(target_names[target], source_names[source]) for target, source in matches]
