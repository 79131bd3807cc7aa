"""PyTorch CPU peer for `npm run bench`: the same ResNet-50-D and shapes, medians over runs.

Reads a JSON job from argv[1] ({"threads", "runs", "cases": [{"kind", "batch", "size", "layout"?, "autocast"?}]};
layout "channels_last" runs the model and input in NHWC memory, autocast runs under bf16 autocast) and prints one
JSON object with images/s per case. The model is written here in plain PyTorch (no torchvision, no timm)
so the peer needs only Debian's python3-torch.
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


def main():
    job = json.loads(sys.argv[1])
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
