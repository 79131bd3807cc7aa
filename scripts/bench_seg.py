"""PyTorch CPU peer for the segmentation part of `npm run bench`: torchvision's fcn_resnet50.

The network is torchvision's own builder, unchanged: fcn_resnet50(weights=None, weights_backbone=None,
aux_loss=False, num_classes=C): ResNet-50-B with replace_stride_with_dilation=[False, True, True]
(output stride 8), FCNHead on C5 (3x3 conv 2048->512, BN, ReLU, dropout 0.1, 1x1 conv 512->C), bilinear
upsampling to the input size (align_corners=False). Random weights with torchvision's initialization
(seeded), eval mode, torch.inference_mode(), batch 1.

Job on argv[1] as JSON: {"threads", "runs", "warmup", "height", "width", "classes", "seed", "input",
"serve", "convs", "profile"}; "input" is a file of float32 values [3, height, width] (the image the caller times),
else a random normal image is made here. With "convs" (a list of {"inChannels", "outChannels", "kernel",
"dilation", "size"}), the model is each single convolution (with bias, then ReLU) on a random
[1, inChannels, size, size] input instead, and each "run" times one inference of every one in turn,
answered {"seconds": [s, ...]}.
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


def single_convs(convs, seed):
    """One conv + ReLU per case and its input: the FCN's heaviest convolutions measured alone."""
    torch.manual_seed(seed)
    cases = []
    for c in convs:
        k, d = c["kernel"], c.get("dilation", 1)
        conv = torch.nn.Conv2d(c["inChannels"], c["outChannels"], k, padding=d * (k - 1) // 2, dilation=d).eval()
        cases.append((conv, torch.randn(1, c["inChannels"], c["size"], c["size"])))

    def step():
        times = []
        with torch.inference_mode():
            for conv, x in cases:
                t = time.perf_counter()
                torch.relu(conv(x))
                times.append(time.perf_counter() - t)
        return times

    return step


def serve(info, step):
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        t = time.perf_counter()
        r = step()
        print(json.dumps({"seconds": r if isinstance(r, list) else time.perf_counter() - t}), flush=True)


def part_name(name, module):
    """The part of the network a module belongs to, in bench-seg.ts's names."""
    stage = name.split(".")[1] if name.startswith("backbone.") else "head"
    if stage in ("conv1", "bn1", "relu", "maxpool"):
        return "stem"
    if isinstance(module, torch.nn.Conv2d):
        k, d = module.kernel_size, module.dilation[0]
        return f"{stage} {k[0]}x{k[1]}" + (f" dilation {d}" if d > 1 else "")
    return f"{stage} BN, ReLU"


def profile_parts(model, image):
    """One forward timed module by module (hooks removed after): {part: {"ms", "gmacs"}}, and its wall time."""
    parts, started, hooks = {}, {}, []

    def before(module, inputs):
        started[module] = time.perf_counter()

    def after(module, inputs, output):
        p = parts.setdefault(module.part, {"ms": 0.0, "gmacs": 0.0})
        p["ms"] += 1000 * (time.perf_counter() - started[module])
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size
            p["gmacs"] += output.numel() * module.in_channels // module.groups * k[0] * k[1] / 1e9

    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU, torch.nn.MaxPool2d)):
            module.part = part_name(name, module)
            hooks += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        t = time.perf_counter()
        with torch.inference_mode():
            model(image)
        return parts, 1000 * (time.perf_counter() - t)
    finally:
        for h in hooks:
            h.remove()


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
    versions = {"torch": torch.__version__, "torchvision": torchvision.__version__, "threads": torch.get_num_threads()}
    if job.get("convs"):
        step = single_convs(job["convs"], job.get("seed", 0))
        for _ in range(1 + job.get("warmup", 1)):
            step()
        serve(versions, step)
        return
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
        **versions,
        "params": sum(p.numel() for p in model.parameters()),
        "height": h,
        "width": w,
        "classes": classes,
        **summary,
    }
    if job.get("profile"):
        info["parts"], info["profileMs"] = profile_parts(model, image)
    if job.get("serve"):
        serve(info, step)
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
