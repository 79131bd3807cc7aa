"""PyTorch CPU peer for the detection part of `npm run bench`: torchvision's FasterRCNN in zoo's C4 layout.

The network (random weights, seeded, eval mode, inference_mode):
  trunk     ResNet-50-D stem..layer3 (deep stem 32-32-64, average-pool shortcuts), stride 16, 1024 channels
  RPN       torchvision's RPNHead (3x3 conv 1024, 15 anchors per position), AnchorGenerator with sizes
            32..512 (base 16 x scales 2..32) and ratios 0.5/1/2; test pre/post NMS 6000/300, NMS 0.7,
            min size 16 (torchvision hardcodes 1e-3 and offers no argument: set on the module)
  RoI pool  MultiScaleRoIAlign(['0'], 14, 2): RoIAlign 14x14, sampling 2, scale 1/16 inferred from the
            feature size; torchvision calls roi_align with aligned=False there (zoo: aligned=True, the
            same work)
  box head  layer4 (its stride 2 gives 7x7) + global average pool + flatten -> [R, 2048]
  predictor FastRCNNPredictor(2048, C+1), weights N(0, 0.01) / N(0, 0.001) as zoo's
  output     per-class NMS 0.3, score threshold 0.01, 100 detections
The transform normalizes nothing and resizes nothing (the inputs are already normalized images of the
size measured) and pads to a multiple of 1, so a 600x1000 image stays 600x1000 (torchvision's default
pads to multiples of 32: 608x1024).

Differences that remain (same amount of work, different numbers): torchvision's anchors are centred at
the cell origin (zoo: py-faster-rcnn's, centred at 7.5), RoIAlign aligned=False, the predictor's box
deltas include the background class.

Job on argv[1] as JSON: {"threads", "runs", "warmup", "height", "width", "classes", "seed", "input",
"serve"}; "warmup" counts the runs after the first (which counts the boxes); "input" is a file of float32 values [3, height, width] (the image the caller times), else a
smooth random image is made here.
Without "serve": prints one JSON object with the medians. With "serve": builds and warms up, prints one
JSON line (the description and the workload counts), then answers each stdin line "run" with a JSON
line {"seconds": s} (one timed forward), so that the caller can alternate its own runs with these;
"quit" or end of input ends it.
"""
import json
import statistics
import sys
import time

import numpy
import torch
import torch.nn as nn
import torchvision
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign


def conv_bn(cin, cout, stride=1, relu=True):
    layers = [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


def resnet50d():
    """torchvision's resnet50 (stride on the 3x3, ResNet-B) with the D stem and shortcuts."""
    net = resnet50(weights=None)
    # Deep stem: 3x3/2 conv 32, 3x3 conv 32, 3x3 conv 64; net.bn1 and net.relu follow the last one.
    net.conv1 = nn.Sequential(*conv_bn(3, 32, 2), *conv_bn(32, 32), nn.Conv2d(32, 64, 3, 1, 1, bias=False))
    for layer in (net.layer2, net.layer3, net.layer4):
        block = layer[0]
        conv = block.downsample[0]
        # 2x2/2 average pool (ceil, padding not counted), then a 1x1 conv of stride 1 + BN.
        block.downsample = nn.Sequential(
            nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False),
            nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=False),
            block.downsample[1],
        )
    # zoo's initialization: Xavier uniform over k*k*cin and k*k*cout (torchvision's Kaiming normal makes
    # a random network's activations grow stage by stage until every score is 0 or 1, which changes how
    # many boxes reach the final NMS); batch norm gamma 1, beta 0, running mean 0, variance 1 in both.
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
    return net


class Trunk(nn.Sequential):
    """Stem..layer3: C4 features at stride 16."""

    def __init__(self, net):
        super().__init__(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3)
        self.out_channels = 1024


class StageBoxHead(nn.Module):
    """layer4 on the pooled regions, then global average pooling: [R, 1024, 14, 14] -> [R, 2048]."""

    def __init__(self, net):
        super().__init__()
        self.layer4 = net.layer4

    def forward(self, x):
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.layer4(x), 1), 1)


class PassThrough(GeneralizedRCNNTransform):
    """The inputs are normalized images of the size measured: no normalization, no resize."""

    def normalize(self, image):
        return image

    def resize(self, image, target=None):
        return image, target


def build(classes, seed):
    torch.manual_seed(seed)
    net = resnet50d()
    predictor = FastRCNNPredictor(2048, classes + 1)
    nn.init.normal_(predictor.cls_score.weight, std=0.01)
    nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
    nn.init.zeros_(predictor.cls_score.bias)
    nn.init.zeros_(predictor.bbox_pred.bias)
    model = FasterRCNN(
        Trunk(net),
        num_classes=None,
        rpn_anchor_generator=AnchorGenerator(((32, 64, 128, 256, 512),), ((0.5, 1.0, 2.0),)),
        rpn_pre_nms_top_n_test=6000,
        rpn_post_nms_top_n_test=300,
        rpn_nms_thresh=0.7,
        box_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
        box_head=StageBoxHead(net),
        box_predictor=predictor,
        box_score_thresh=0.01,
        box_nms_thresh=0.3,
        box_detections_per_img=100,
    )
    model.transform = PassThrough(600, 1000, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], size_divisible=1)
    model.rpn.min_size = 16
    return model.eval()


def smooth_image(height, width, seed):
    """Low-frequency waves plus a little noise, at the scale of normalized images."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(height, dtype=torch.float32)[:, None] / height
    xs = torch.arange(width, dtype=torch.float32)[None, :] / width
    img = torch.zeros(3, height, width)
    for i in range(6):
        fx, fy, px = (torch.rand(3, generator=g) * torch.tensor([5.5, 5.5, 6.28]) + torch.tensor([0.5, 0.5, 0.0])).tolist()
        a = float(torch.randn(1, generator=g))
        for c in range(3):
            img[c] += a * torch.sin(fx * xs * 6.28 + fy * ys * 6.28 + px + c * (i + 1))
    return img + 0.3 * torch.randn(3, height, width, generator=g)


def counts(model, image):
    """Proposals of the RPN, detections after the per-class NMS (before the cut to 100), detections.

    One forward with the cut lifted (it also serves as the first warm-up)."""
    seen = {}

    def on_rpn(module, inputs, output):  # a hook that returns nothing leaves the output alone
        seen["proposals"] = len(output[0][0])

    hook = model.rpn.register_forward_hook(on_rpn)
    keep = model.roi_heads.detections_per_img
    model.roi_heads.detections_per_img = 1 << 30
    with torch.inference_mode():
        after_nms = len(model([image])[0]["boxes"])
    model.roi_heads.detections_per_img = keep
    hook.remove()
    return {"proposals": seen["proposals"], "afterNms": after_nms, "detections": min(after_nms, keep)}


def main():
    job = json.loads(sys.argv[1])
    torch.set_num_threads(job["threads"])
    h, w = job.get("height", 600), job.get("width", 1000)
    model = build(job.get("classes", 20), job.get("seed", 0))
    if job.get("input"):
        image = torch.from_numpy(numpy.fromfile(job["input"], dtype=numpy.float32).reshape(3, h, w))
    else:
        image = smooth_image(h, w, job.get("seed", 0) + 1)

    def step():
        with torch.inference_mode():
            model([image])

    counted = counts(model, image)
    for _ in range(job.get("warmup", 1)):
        step()
    info = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
        "height": h,
        "width": w,
        **counted,
    }
    if job.get("serve"):
        print(json.dumps(info), flush=True)
        for line in sys.stdin:
            if line.strip() != "run":
                break
            t = time.perf_counter()
            step()
            print(json.dumps({"seconds": time.perf_counter() - t}), flush=True)
        return
    times = []
    for _ in range(job["runs"]):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(json.dumps({**info, "seconds": med, "times": times, "imagesPerSecond": 1 / med}))


if __name__ == "__main__":
    main()
