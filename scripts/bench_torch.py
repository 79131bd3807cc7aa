"""PyTorch peer for `npm run bench`: the same ResNet-50-D and shapes, medians over runs.

Reads a JSON job from argv[1] ({"threads", "runs", "cases": [{"kind", "batch", "size", "layout"?, "autocast"?}]};
layout "channels_last" runs the model and input in NHWC memory, autocast runs under bf16 autocast) and prints one
JSON object with images/s per case, on the CPU. The model is written here in plain PyTorch (no torchvision, no
timm) so the peer needs only Debian's python3-torch.

With "serve" (the WebGPU benchmark, scripts/bench-webgpu.ts): {"threads", "device": "auto" | "cuda" | "cpu",
"cases": [{"kind": "train", "batch", "size", "warmup"}]}. "auto" is CUDA where torch.cuda.is_available(), else
the CPU. Builds and warms up, prints one JSON line ({"torch", "device", "deviceName", "labels", "note"?}),
then answers each "run" line with {"seconds": [...]}: one training step of each case (forward, loss, backward,
SGD, and the loss read back as zoo reads its own), timed to the end of the GPU's work. On CUDA each case is
timed twice, labelled: "FP32" with TF32 off (WebGPU computes in float32) and "TF32 (default)" with PyTorch's
default settings (TF32 convolutions).
"""
import json
import statistics
import sys
import time

import torch
import torch.nn as nn


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride, down):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if down:
            pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
            self.downsample = nn.Sequential(pool, nn.Conv2d(cin, width * 4, 1, bias=False), nn.BatchNorm2d(width * 4))

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


class ResNet50D(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(True),
            nn.Conv2d(32, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(True),
            nn.Conv2d(32, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
            nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for stage, (n, width) in enumerate(zip([3, 4, 6, 3], [64, 128, 256, 512])):
            for b in range(n):
                stride = (1 if stage == 0 else 2) if b == 0 else 1
                blocks.append(Bottleneck(cin, width, stride, b == 0))
                cin = width * 4
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        return self.fc(self.layers(self.stem(x)).mean((2, 3)))


def median_time(fn, runs, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def serve(job):
    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    want = job.get("device", "auto")
    cuda = torch.cuda.is_available()
    note = None
    if want == "cuda" and not cuda:
        print(json.dumps({"error": "torch.cuda.is_available() is False"}), flush=True)
        return
    device = torch.device("cuda" if (cuda and want != "cpu") else "cpu")
    if want == "auto" and not cuda:
        note = f"torch {torch.__version__} sees no CUDA device: the peer runs on the CPU"
    on_cuda = device.type == "cuda"
    # (label, TF32 allowed) per timed variant of each case.
    modes = [("FP32", False), ("TF32 (default)", True)] if on_cuda else [("FP32", False)]
    default_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)

    def set_tf32(on):
        if on_cuda:
            torch.backends.cuda.matmul.allow_tf32 = default_tf32[0] if on else False
            torch.backends.cudnn.allow_tf32 = default_tf32[1] if on else False

    steps = []
    for case in job["cases"]:
        b, s = case["batch"], case["size"]
        model = ResNet50D().to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
        x = torch.randn(b, 3, s, s, device=device)
        y = torch.randint(0, 1000, (b,), device=device)

        def step(model=model, opt=opt, x=x, y=y):
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss.item()  # the read-back; on CUDA it waits for the step's kernels

        for _, tf32 in modes:
            set_tf32(tf32)
            for _ in range(case.get("warmup", 2)):
                step()
        steps.append(step)
    name = torch.cuda.get_device_name(device) if on_cuda else "cpu"
    ready = {"torch": torch.__version__, "device": device.type, "deviceName": name, "labels": [m[0] for _ in steps for m in modes]}
    if note:
        ready["note"] = note
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        seconds = []
        for step in steps:
            for _, tf32 in modes:
                set_tf32(tf32)
                if on_cuda:
                    torch.cuda.synchronize()
                t = time.perf_counter()
                step()
                if on_cuda:
                    torch.cuda.synchronize()
                seconds.append(time.perf_counter() - t)
        print(json.dumps({"seconds": seconds}), flush=True)


def main():
    job = json.loads(sys.argv[1])
    if job.get("serve"):
        serve(job)
        return
    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    model = ResNet50D()
    params = sum(p.numel() for p in model.parameters())
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "params": params, "cases": []}
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    for case in job["cases"]:
        b, s = case["batch"], case["size"]
        x = torch.randn(b, 3, s, s)
        # channels_last: NHWC memory for the model and input, oneDNN's preferred layout; else PyTorch's default.
        fmt = torch.channels_last if case.get("layout") == "channels_last" else torch.contiguous_format
        model = model.to(memory_format=fmt)
        x = x.contiguous(memory_format=fmt)
        autocast = case.get("autocast", False)
        if case["kind"] == "forward":
            model.eval()

            def step():
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    model(x)
        else:
            model.train()
            y = torch.randint(0, 1000, (b,))

            def step():
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
        med, times = median_time(step, job["runs"], case.get("warmup", 2))
        out["cases"].append({**case, "seconds": med, "times": times, "imagesPerSecond": b / med})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
