"""One training-throughput measurement in a fresh process (so peak memory is its own).

    python bench/train_step_worker.py --impl ours|torchvision --depth 18 --mode whole|model

``whole``: data loading, transforms, forward, loss, backward and optimizer step, through each
implementation's own data path. ``model``: the same with one preloaded batch, data excluded.
Prints one JSON line: images/s, peak memory in MiB (the process's RSS on the CPU,
``torch.cuda.max_memory_allocated`` on a GPU), and for ``ours`` the FLOPs of one step.
"""
import argparse
import itertools
import json
import os
import resource
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch
from torch import nn
from torch.utils.data import DataLoader

from retinanet.data.coco import CocoDetection
from retinanet.data.image_io import load_image_rgb
from retinanet.models.loss import RetinaNetLoss
from retinanet.models.retinanet import RetinaNet
from retinanet.data.loader import build_loader
from retinanet.data.transforms import TrainTransform


class TorchvisionStyleData(torch.utils.data.Dataset):
    """What torchvision's detection reference feeds its models: float 0-1 tensors at file size,
    boxes in file pixels; resizing and normalisation happen inside the model."""

    def __init__(self, coco):
        self.coco = coco

    def __len__(self):
        return len(self.coco)

    def __getitem__(self, index):
        image = torch.from_numpy(load_image_rgb(self.coco.image_path(index))).permute(2, 0, 1).float() / 255
        boxes, labels = self.coco.ground_truth(index)
        return image, {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)}


def torchvision_model(depth, num_classes, min_side, max_side):
    from torchvision.models.detection import RetinaNet as TorchvisionRetinaNet
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    backbone = resnet_fpn_backbone(backbone_name=f"resnet{depth}", weights=None, norm_layer=nn.BatchNorm2d,
                                   trainable_layers=5, returned_layers=[2, 3, 4],
                                   extra_blocks=LastLevelP6P7(256, 256))
    return TorchvisionRetinaNet(backbone, num_classes, min_size=min_side, max_size=max_side)


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=("ours", "torchvision"), required=True)
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--mode", choices=("whole", "model"), default="whole")
    parser.add_argument("--coco_path", default=os.path.join(ROOT, "data"))
    parser.add_argument("--min_side", type=int, default=256)
    parser.add_argument("--max_side", type=int, default=320)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast around the forward pass")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    return parser.parse_args()


def build_step(args, coco, device):
    """(model, loader, step): ``step(batch)`` returns the loss of one batch for either implementation."""
    if args.impl == "ours":
        model = RetinaNet(coco.num_classes, depth=args.depth, norm="bn", head_norm="none")
        criterion = RetinaNetLoss()
        loader = build_loader(coco, batch_size=args.batch_size, shuffle=True, drop_last=True, workers=args.workers)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)

        def step(batch):
            images, targets, _ = batch
            images = images.to(device, non_blocking=True)
            if args.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                outputs = model(images)
            return criterion(outputs, targets)["loss"]
    else:
        model = torchvision_model(args.depth, coco.num_classes, args.min_side, args.max_side)
        loader = DataLoader(TorchvisionStyleData(coco), batch_size=args.batch_size, shuffle=True, drop_last=True,
                            num_workers=args.workers, collate_fn=lambda batch: tuple(zip(*batch)),
                            persistent_workers=args.workers > 0)

        def step(batch):
            images, targets = batch
            images = [image.to(device, non_blocking=True) for image in images]
            targets = [{key: value.to(device) for key, value in target.items()} for target in targets]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                losses = model(images, targets)
            return sum(loss.float() for loss in losses.values())
    return model, loader, step


def main():
    args = parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    coco = CocoDetection(args.coco_path, "train", TrainTransform(args.min_side, args.max_side))
    model, loader, step = build_step(args, coco, device)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    batches = itertools.cycle(loader) if args.mode == "whole" else itertools.repeat(next(iter(loader)))
    flops = None
    if args.impl == "ours" and args.mode == "model" and not args.amp:
        from torch.utils.flop_counter import FlopCounterMode
        counter = FlopCounterMode(display=False)
        with counter:
            step(next(batches)).backward()
        optimizer.zero_grad()
        flops = counter.get_total_flops()
    for index in range(args.warmup + args.steps):
        if index == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
        loss = step(next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": args.impl, "depth": args.depth, "mode": args.mode, "amp": args.amp,
                      "images_per_second": args.steps * args.batch_size / seconds,
                      "step_seconds": seconds / args.steps, "peak_rss_mib": peak_mib, "flops_per_step": flops}))


if __name__ == "__main__":
    main()
