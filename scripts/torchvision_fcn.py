#!/usr/bin/env python3
"""torchvision's FCN as a reference for zoo's segmenter: weights in torchvision's (or GluonCV's) names, inputs, outputs.

  python3 scripts/torchvision_fcn.py make --out DIR [--arch resnet50] [--classes K] [--seed S]
          [--sizes 67x91,96x96] [--batch 2] [--no-aux] [--naming torchvision|gluoncv]
      torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=K,
      aux_loss=True) (fcn_resnet101 for --arch resnet101) with seeded random weights whose batch-norm
      statistics come from a few training-mode passes over random images (so the activations keep a
      sensible scale through 50 layers), saved as DIR/weights.pth (torch.save of the state dict, as
      torchvision publishes its files) and run in eval mode on a seeded batch at each size:
        DIR/input_HxW.bin   float32 NCHW, already normalized
        DIR/out_HxW.bin     the 'out' logits, float32 NCHW [N, K, H, W]
        DIR/aux_HxW.bin     the 'aux' logits (unless --no-aux)
        DIR/reference.json  what was made, with every tensor's shape
      --naming gluoncv makes GluonCV's FCN instead (gluoncv/model_zoo/fcn.py, segbase.py on resnetv1b.py's
      resnet50_v1s / resnet101_v1s with dilated=True): the same network with the deep 64-64-128 stem, the
      head upsampled with align_corners=True (MXNet's BilinearResize2D), saved as DIR/weights.params under
      GluonCV's names (conv1.0, bn1, layerS.B.*, head.block.*, auxlayer.block.*; BN gamma / beta) in
      MXNet's NDArray list format.
  python3 scripts/torchvision_fcn.py run --weights FILE.pth --arch resnet50 --classes 21 --input x.bin --shape N,3,H,W --out DIR
      torchvision's FCN with a state dict from a file (e.g. the published fcn_resnet50_coco-1167a1af.pth) on one input.

Needs PyTorch and torchvision (written against torchvision 0.14, Debian's python3-torchvision).
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.segmentation import fcn_resnet50, fcn_resnet101

BUILDERS = {'resnet50': fcn_resnet50, 'resnet101': fcn_resnet101}


def build(arch, classes, aux):
    return BUILDERS[arch](weights=None, weights_backbone=None, num_classes=classes, aux_loss=aux)


def deep_stem(model):
    """resnetv1b.py's deep_stem=True, stem_width=64: three 3x3 convs 64-64-128, bn1 over 128 channels."""
    b = model.backbone
    b.conv1 = nn.Sequential(
        nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 128, 3, 1, 1, bias=False))
    b.bn1 = nn.BatchNorm2d(128)
    b.layer1[0].conv1 = nn.Conv2d(128, 64, 1, bias=False)
    b.layer1[0].downsample[0] = nn.Conv2d(128, 256, 1, bias=False)
    return model


def randomize(model, seed):
    """Seeded weights with batch-norm statistics of random images and random affine parameters.

    The last batch norm of each residual branch gets a small scale (0.1 to 0.3), as trained ResNets have:
    with scales near 1 the residual stream of 16 bottlenecks grows until float32 rounding alone moves the
    logits by 1e-4 of their range (torchvision's own float32 output against float64), and a comparison at
    that tolerance would measure rounding, not the weights' mapping.
    """
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            if m.bias is not None:
                nn.init.uniform_(m.bias, -0.1, 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration passes
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    for m in model.modules():
        if hasattr(m, 'bn3'):
            nn.init.uniform_(m.bn3.weight, 0.1, 0.3)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 3, 64, 64))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    model.eval()


def forward(model, x, align_corners):
    """_SimpleSegmentationModel.forward with the upsampling of the weights' origin."""
    size = x.shape[-2:]
    features = model.backbone(x)
    out = {'out': F.interpolate(model.classifier(features['out']), size=size, mode='bilinear', align_corners=align_corners)}
    if model.aux_classifier is not None:
        out['aux'] = F.interpolate(model.aux_classifier(features['aux']), size=size, mode='bilinear', align_corners=align_corners)
    return out


# MXNet NDArray list (.params): what NDArray::Save writes (V2 records, float32, CPU context).
LIST_MAGIC = 0x112
V2 = 0xF993FAC9


def write_params(path, arrays):
    out = [struct.pack('<QQQ', LIST_MAGIC, 0, len(arrays))]
    for a in arrays.values():
        a = np.ascontiguousarray(a, dtype=np.float32)
        out.append(struct.pack('<Iii', V2, 0, a.ndim))
        out.append(struct.pack('<%dq' % a.ndim, *a.shape))
        out.append(struct.pack('<iii', 1, 0, 0))
        out.append(a.tobytes())
    out.append(struct.pack('<Q', len(arrays)))
    for name in arrays:
        b = name.encode('utf8')
        out.append(struct.pack('<Q', len(b)) + b)
    with open(path, 'wb') as f:
        f.write(b''.join(out))


def gluon_name(name):
    """GluonCV's name for a torchvision FCN tensor of the same network, or None for tensors GluonCV does not save."""
    if name.endswith('num_batches_tracked'):
        return None
    if name.startswith('backbone.'):
        name = name[len('backbone.'):]
    elif name.startswith('classifier.'):
        name = 'head.block.' + name[len('classifier.'):]
    elif name.startswith('aux_classifier.'):
        name = 'auxlayer.block.' + name[len('aux_classifier.'):]
    prefix, leaf = name.rsplit('.', 1)
    return prefix + '.' + {'weight': 'gamma', 'bias': 'beta'}.get(leaf, leaf) if is_bn.get(prefix) else name


is_bn = {}


def save_gluon(model, path):
    is_bn.clear()
    for n, m in model.named_modules():
        short = n
        for a, b in (('backbone.', ''), ('classifier.', 'head.block.'), ('aux_classifier.', 'auxlayer.block.')):
            if n.startswith(a):
                short = b + n[len(a):]
        is_bn[short] = isinstance(m, nn.BatchNorm2d)
    arrays = {}
    for name, t in model.state_dict().items():
        g = gluon_name(name)
        if g is not None:
            arrays[g] = t.detach().numpy()
    write_params(path, arrays)
    return len(arrays)


def parse_size(s):
    h, w = s.lower().split('x')
    return int(h), int(w)


def save(path, t):
    t.detach().contiguous().numpy().astype(np.float32).tofile(path)


def cmd_make(args):
    os.makedirs(args.out, exist_ok=True)
    aux = not args.no_aux
    model = build(args.arch, args.classes, aux)
    gluon = args.naming == 'gluoncv'
    if gluon:
        deep_stem(model)
    randomize(model, args.seed)
    if gluon:
        weights = os.path.join(args.out, 'weights.params')
        count = save_gluon(model, weights)
    else:
        weights = os.path.join(args.out, 'weights.pth')
        torch.save(model.state_dict(), weights)
        count = len(model.state_dict())
    align = gluon
    ref = {'arch': args.arch, 'naming': args.naming, 'classes': args.classes, 'aux': aux, 'alignCorners': align,
           'seed': args.seed, 'batch': args.batch, 'weights': os.path.basename(weights), 'tensorsSaved': count,
           'torch': torch.__version__, 'cases': []}
    g = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        for size in args.sizes.split(','):
            h, w = parse_size(size)
            x = torch.randn(args.batch, 3, h, w, generator=g)
            y = forward(model, x, align)
            tag = '%dx%d' % (h, w)
            save(os.path.join(args.out, 'input_%s.bin' % tag), x)
            case = {'height': h, 'width': w, 'input': 'input_%s.bin' % tag, 'inputShape': list(x.shape)}
            for k, v in y.items():
                save(os.path.join(args.out, '%s_%s.bin' % (k, tag)), v)
                case[k] = '%s_%s.bin' % (k, tag)
                case[k + 'Shape'] = list(v.shape)
                case[k + 'MaxAbs'] = float(v.abs().max())
            ref['cases'].append(case)
    with open(os.path.join(args.out, 'reference.json'), 'w') as f:
        json.dump(ref, f, indent=1)


def cmd_run(args):
    model = build(args.arch, args.classes, True)
    state = torch.load(args.weights, map_location='cpu')
    if not any(k.startswith('aux_classifier.') for k in state):
        model.aux_classifier = None
    model.load_state_dict(state)
    model.eval()
    shape = [int(v) for v in args.shape.split(',')]
    x = torch.from_numpy(np.fromfile(args.input, dtype=np.float32).reshape(shape))
    os.makedirs(args.out, exist_ok=True)
    with torch.no_grad():
        y = forward(model, x, False)
    for k, v in y.items():
        save(os.path.join(args.out, '%s.bin' % k), v)
    with open(os.path.join(args.out, 'reference.json'), 'w') as f:
        json.dump({k + 'Shape': list(v.shape) for k, v in y.items()}, f)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    m = sub.add_parser('make')
    m.add_argument('--out', required=True)
    m.add_argument('--arch', choices=sorted(BUILDERS), default='resnet50')
    m.add_argument('--classes', type=int, default=21)
    m.add_argument('--seed', type=int, default=0)
    m.add_argument('--sizes', default='67x91,96x96')
    m.add_argument('--batch', type=int, default=2)
    m.add_argument('--no-aux', action='store_true')
    m.add_argument('--naming', choices=['torchvision', 'gluoncv'], default='torchvision')
    r = sub.add_parser('run')
    r.add_argument('--weights', required=True)
    r.add_argument('--arch', choices=sorted(BUILDERS), default='resnet50')
    r.add_argument('--classes', type=int, default=21)
    r.add_argument('--input', required=True)
    r.add_argument('--shape', required=True)
    r.add_argument('--out', required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    {'make': cmd_make, 'run': cmd_run}[args.cmd](args)


if __name__ == '__main__':
    main(sys.argv[1:])
