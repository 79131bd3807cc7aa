"""PyTorch CPU peer for the segmentation part of `npm run bench`: torchvision's fcn_resnet50.

The network is torchvision's own builder, unchanged: fcn_resnet50(weights=None, weights_backbone=None,
aux_loss=False, num_classes=C): ResNet-50-B with replace_stride_with_dilation=[False, True, True]
(output stride 8), FCNHead on C5 (3x3 conv 2048->512, BN, ReLU, dropout 0.1, 1x1 conv 512->C), bilinear
upsampling to the input size (align_corners=False). Random weights with torchvision's initialization
(seeded), eval mode, torch.inference_mode(), batch 1.

Job on argv[1] as JSON: {"threads", "runs", "warmup", "height", "width", "classes", "seed", "input",
"serve"}; "input" is a file of float32 values [3, height, width] (the image the caller times), else a
random normal image is made here.
Without "serve": prints one JSON object with the medians. With "serve": builds and warms up, prints one
JSON line (the description and the output's shape and range), then answers each stdin line "run" with a
JSON line {"seconds": s} (one timed forward), so that the caller can alternate its own runs with these;
"quit" or end of input ends it.
"""
import json
import statistics
import sys
import time

import numpy
import torch
import torchvision
from torchvision.models.segmentation import fcn_resnet50


def build(classes, seed):
    torch.manual_seed(seed)
    return fcn_resnet50(weights=None, weights_backbone=None, aux_loss=False, num_classes=classes).eval()


def output_summary(out):
    """The output's shape and range: a random network's logits, to compare with zoo's side."""
    finite = torch.isfinite(out)
    return {
        "outputShape": list(out.shape),
        "finite": float(finite.float().mean()),
        "maxAbs": float(out[finite].abs().max()) if finite.any() else None,
    }


def main():
    job = json.loads(sys.argv[1])
    torch.set_num_threads(job["threads"])
    h, w = job.get("height", 480), job.get("width", 480)
    classes = job.get("classes", 21)
    model = build(classes, job.get("seed", 0))
    if job.get("input"):
        image = torch.from_numpy(numpy.fromfile(job["input"], dtype=numpy.float32).reshape(1, 3, h, w))
    else:
        image = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(job.get("seed", 0) + 1))

    def step():
        with torch.inference_mode():
            return model(image)["out"]

    summary = output_summary(step())  # also the first warm-up
    for _ in range(job.get("warmup", 1)):
        step()
    info = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
        "height": h,
        "width": w,
        "classes": classes,
        **summary,
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
