"""The fast paths give what a straightforward implementation gives.

- The OpenCV data pipeline against Pillow decoding, scikit-image resizing and NumPy
  normalisation, written the plain way.
- The batch-vectorised loss against a per-image loop that spells out every formula.
"""
import numpy as np
import pytest
import skimage.transform
import torch
from PIL import Image

from retinanet.models.loss import RetinaNetLoss
from retinanet.models.retinanet import RetinaNet
from retinanet.data.transforms import EvalTransform, IMAGENET_MEAN, IMAGENET_STD


def straightforward_transform(path, boxes, min_side, max_side):
    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    rows, cols = image.shape[:2]
    scale = min_side / min(rows, cols)
    if max(rows, cols) * scale > max_side:
        scale = max_side / max(rows, cols)
    resized = skimage.transform.resize(image, (round(rows * scale), round(cols * scale)), order=1,
                                       anti_aliasing=scale < 1)
    normalised = (resized - IMAGENET_MEAN) / IMAGENET_STD
    return normalised.transpose(2, 0, 1), boxes * scale, scale


@pytest.mark.parametrize("size, min_side, max_side", [((120, 90), 180, 300), ((400, 300), 150, 200),
                                                       ((64, 200), 100, 400)])
def test_opencv_pipeline_matches_the_straightforward_one(tmp_path, size, min_side, max_side):
    rng = np.random.default_rng(0)
    width, height = size
    # A smooth picture with a few flat shapes: what detection images look like, not white noise.
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    pixels[height // 4: height // 2, width // 4: width // 2] = rng.integers(0, 255, size=3)
    path = tmp_path / "image.png"
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    boxes = np.array([[width / 4, height / 4, width / 2, height / 2], [0, 0, width, height]], dtype=np.float32)

    from retinanet.data.image_io import load_image_rgb
    ours, our_boxes, our_scale = EvalTransform(min_side, max_side)(load_image_rgb(str(path)), boxes)
    reference, reference_boxes, reference_scale = straightforward_transform(path, boxes, min_side, max_side)
    assert our_scale == pytest.approx(reference_scale)
    assert np.allclose(our_boxes, reference_boxes, atol=1e-4)
    assert ours.shape == reference.shape
    difference = np.abs(ours.numpy() - reference)
    # Normalised units: one 8-bit grey level is about 0.017. Interpolation kernels differ at edges.
    assert difference.mean() < 0.02, difference.mean()
    assert np.median(difference) < 0.01


def reference_loss(outputs, targets, alpha=0.25, gamma=2.0):
    """Image by image, formula by formula."""
    anchors = outputs["anchors"]
    cls_losses, box_losses = [], []
    for index, target in enumerate(targets):
        logits, deltas = outputs["cls_logits"][index], outputs["box_deltas"][index]
        probabilities = torch.sigmoid(logits).clamp(1e-6, 1 - 1e-6)
        gt = target["boxes"]
        if len(gt) == 0:
            cls_losses.append((-(1 - alpha) * probabilities ** gamma * torch.log(1 - probabilities)).sum())
            box_losses.append(torch.tensor(0.0))
            continue
        ax1, ay1, ax2, ay2 = anchors.unbind(1)
        iou = torch.zeros(len(anchors), len(gt))
        for j, (gx1, gy1, gx2, gy2) in enumerate(gt.tolist()):
            inter = (torch.minimum(ax2, torch.tensor(gx2)) - torch.maximum(ax1, torch.tensor(gx1))).clamp(min=0) * \
                    (torch.minimum(ay2, torch.tensor(gy2)) - torch.maximum(ay1, torch.tensor(gy1))).clamp(min=0)
            iou[:, j] = inter / ((ax2 - ax1) * (ay2 - ay1) + (gx2 - gx1) * (gy2 - gy1) - inter)
        best, matched = iou.max(dim=1)
        positive, negative = best >= 0.5, best < 0.4
        one_hot = torch.zeros_like(logits)
        one_hot[positive, target["labels"][matched[positive]]] = 1
        positive_term = -alpha * (1 - probabilities) ** gamma * torch.log(probabilities)
        negative_term = -(1 - alpha) * probabilities ** gamma * torch.log(1 - probabilities)
        per_element = torch.where(one_hot == 1, positive_term, negative_term)
        per_element = per_element * (positive | negative)[:, None]
        count = max(1, int(positive.sum()))
        cls_losses.append(per_element.sum() / count)
        assigned = gt[matched[positive]]
        a = anchors[positive]
        aw, ah = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        gw, gh = assigned[:, 2] - assigned[:, 0], assigned[:, 3] - assigned[:, 1]
        target_deltas = torch.stack([
            ((assigned[:, 0] + gw / 2) - (a[:, 0] + aw / 2)) / aw / 0.1,
            ((assigned[:, 1] + gh / 2) - (a[:, 1] + ah / 2)) / ah / 0.1,
            torch.log(gw / aw) / 0.2,
            torch.log(gh / ah) / 0.2,
        ], dim=1)
        error = (deltas[positive] - target_deltas).abs()
        beta = 1 / 9
        smooth = torch.where(error < beta, 0.5 * error ** 2 / beta, error - 0.5 * beta)
        box_losses.append(smooth.sum() / count)
    return torch.stack(cls_losses).mean(), torch.stack(box_losses).mean()


def test_vectorised_loss_equals_the_per_image_reference():
    torch.manual_seed(0)
    model = RetinaNet(num_classes=3, depth=18, norm="gn", head_norm="gn", fpn_channels=64, prior=0.1)
    for parameter in model.regression_head.deltas.parameters():
        torch.nn.init.normal_(parameter, std=0.01)  # non-zero regression, so the box term is exercised
    images = torch.randn(3, 3, 96, 128)
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0], [60.0, 20.0, 120.0, 90.0], [5.0, 5.0, 40.0, 40.0]]),
         "labels": torch.tensor([0, 2, 1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
        {"boxes": torch.tensor([[30.0, 5.0, 70.0, 40.0]]), "labels": torch.tensor([1])},
    ]
    with torch.no_grad():
        outputs = model(images)
        ours = RetinaNetLoss()(outputs, targets)
        cls_reference, box_reference = reference_loss(outputs, targets)
    assert ours["cls_loss"].item() == pytest.approx(cls_reference.item(), rel=1e-4)
    assert ours["box_loss"].item() == pytest.approx(box_reference.item(), rel=1e-4)
    assert box_reference.item() > 0
