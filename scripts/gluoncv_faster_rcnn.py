#!/usr/bin/env python3
"""GluonCV's Faster R-CNN inference (C4 layout, resnetv1b backbone) written out in PyTorch.

An independent reference for zoo's detector: it follows GluonCV's own definition of
faster_rcnn_resnet50_v1b_voc as published with its weights (gluoncv/model_zoo/faster_rcnn/faster_rcnn.py,
rcnn/rcnn.py, rpn/{rpn,anchor,proposal}.py, nn/coder.py, nn/bbox.py, resnetv1b.py and MXNet's
contrib.box_nms and contrib.ROIAlign), not zoo's code, and reads and writes the parameters under
GluonCV's own names in MXNet's .params format.

  python3 scripts/gluoncv_faster_rcnn.py make --out DIR [network options]
      random weights for a network of that shape, saved as DIR/weights.params in GluonCV's names
      (with the anchors Constant GluonCV saves), a batch of images DIR/input.bin (float32 NCHW,
      normalized) and the reference outputs DIR/reference.json.
  python3 scripts/gluoncv_faster_rcnn.py run --weights FILE(.params|.zip) --input x.bin --shape N,3,H,W --out ref.json
      the reference forward of any weights file, e.g. the published faster_rcnn_resnet50_v1b_voc-447328d8.zip.

Two sets of detections are written per image:
  "gluoncv": GluonCV's forward exactly: proposals padded to rpn_test_post_nms with -1 rows when
      fewer survive (the padding rows go through the box head too), no clamp of dw/dh before exp
      (clip=None for VOC), per-class box_nms on unclipped boxes, every survivor returned (post_nms is
      not applied by FasterRCNN.hybrid_forward), then boxes clipped to the image as eval_faster_rcnn.py does.
  "zoo": the same network with zoo's selection: the pre-NMS top-k by objectness taken before the
      min-size filter, dw/dh clamped at log(1000/16) before exp, no padding, boxes clipped before the
      per-class NMS, at most --max-detections per image by score.
Needs PyTorch and torchvision (roi_align with aligned=False is MXNet's ROIAlign: Detectron's legacy mode).
"""
import argparse
import json
import math
import struct
import sys
import zipfile

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

BN_EPS = 1e-5  # mxnet.gluon.nn.BatchNorm's default
BBOX_CLIP = math.log(1000.0 / 16)

# ------------------------------------------------------------------------------------------------
# MXNet NDArray list (.params): what NDArray::Save writes (V2 records, float32).

LIST_MAGIC = 0x112
V1, V2, V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
DTYPES = {0: np.float32, 1: np.float64, 2: np.float16}


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


def read_params(path):
    if path.endswith('.zip'):
        with zipfile.ZipFile(path) as z:
            members = [n for n in z.namelist() if n.endswith('.params')]
            data = z.read(members[0])
    else:
        with open(path, 'rb') as f:
            data = f.read()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return v

    magic, _, count = take('<QQQ')
    assert magic == LIST_MAGIC, 'not an MXNet NDArray list'
    arrays = []
    for _ in range(count):
        (m,) = take('<I')
        if m in (V2, V3):
            take('<i')
        if m in (V1, V2, V3):
            (ndim,) = take('<i')
            shape = take('<%dq' % ndim) if ndim > 0 else ()
        else:
            ndim = m
            shape = take('<%dI' % ndim)
        if ndim <= 0:
            arrays.append(None)
            continue
        _, _, flag = take('<iii')
        dt = np.dtype(DTYPES[flag])
        n = int(np.prod(shape))
        arrays.append(np.frombuffer(data, dt, n, pos).reshape(shape).astype(np.float32))
        pos += n * dt.itemsize
    (nnames,) = take('<Q')
    names = []
    for _ in range(nnames):
        (ln,) = take('<Q')
        names.append(data[pos:pos + ln].decode('utf8'))
        pos += ln
    return {k.split(':', 1)[-1]: v for k, v in zip(names, arrays) if v is not None}


# ------------------------------------------------------------------------------------------------
# The network's parameters by GluonCV's structural names (Block._collect_params_with_prefix).


class Config:
    def __init__(self, a):
        self.block = a.block
        self.layers = [int(v) for v in a.layers.split(',')]
        self.widths = [int(v) for v in a.widths.split(',')]
        self.deep_stem = a.stem == 'deep'
        self.stem_width = a.stem_width
        self.avg_down = bool(a.avg_down)
        self.classes = a.classes
        self.rpn_channels = a.rpn_channels
        self.scales = [float(v) for v in a.scales.split(',')]
        self.ratios = [float(v) for v in a.ratios.split(',')]
        self.stride = 16
        self.base_size = 16
        self.alloc = 128
        self.rpn_pre_nms = a.rpn_pre_nms
        self.rpn_post_nms = a.rpn_post_nms
        self.rpn_nms = 0.7
        self.rpn_min_size = 16
        self.nms = 0.3
        self.nms_topk = 400
        self.max_detections = a.max_detections

    @property
    def expansion(self):
        return 4 if self.block == 'bottleneck' else 1

    @property
    def num_anchors(self):
        return len(self.scales) * len(self.ratios)


def shapes(cfg):
    """name -> (kind, shape) for every parameter, in GluonCV's naming."""
    s = {}

    def conv(name, cin, cout, k, bias=False):
        s[name + '.weight'] = ('conv', (cout, cin, k, k))
        if bias:
            s[name + '.bias'] = ('bias', (cout,))

    def bn(name, c, last=False):
        for leaf in ('gamma', 'beta', 'running_mean', 'running_var'):
            s['%s.%s' % (name, leaf)] = ('bn-last' if last else 'bn', (c,))

    if cfg.deep_stem:
        w = cfg.stem_width
        conv('features.0.0', 3, w, 3)
        bn('features.0.1', w)
        conv('features.0.3', w, w, 3)
        bn('features.0.4', w)
        conv('features.0.6', w, 2 * w, 3)
        inplanes = 2 * w
    else:
        conv('features.0', 3, 64, 7)
        inplanes = 64
    bn('features.1', inplanes)
    prefixes = ['features.4', 'features.5', 'features.6', 'top_features.0']
    for stage, (prefix, planes, blocks) in enumerate(zip(prefixes, cfg.widths, cfg.layers)):
        stride = 1 if stage == 0 else 2
        out = planes * cfg.expansion
        for b in range(blocks):
            p = '%s.%d' % (prefix, b)
            if cfg.block == 'bottleneck':
                conv(p + '.conv1', inplanes, planes, 1)
                bn(p + '.bn1', planes)
                conv(p + '.conv2', planes, planes, 3)
                bn(p + '.bn2', planes)
                conv(p + '.conv3', planes, out, 1)
                bn(p + '.bn3', out, last=True)
            else:
                conv(p + '.conv1', inplanes, planes, 3)
                bn(p + '.bn1', planes)
                conv(p + '.conv2', planes, planes, 3)
                bn(p + '.bn2', planes, last=True)
            if b == 0 and (stride != 1 or inplanes != out):
                i = 1 if cfg.avg_down else 0  # the average pool is downsample.0
                conv('%s.downsample.%d' % (p, i), inplanes, out, 1)
                bn('%s.downsample.%d' % (p, i + 1), out)
            inplanes = out
    c4 = cfg.widths[2] * cfg.expansion
    A = cfg.num_anchors
    conv('rpn.conv1.0', c4, cfg.rpn_channels, 3, bias=True)
    conv('rpn.score', cfg.rpn_channels, A, 1, bias=True)
    conv('rpn.loc', cfg.rpn_channels, 4 * A, 1, bias=True)
    f = cfg.widths[3] * cfg.expansion
    s['class_predictor.weight'] = ('dense', (cfg.classes + 1, f))
    s['class_predictor.bias'] = ('bias', (cfg.classes + 1,))
    s['box_predictor.weight'] = ('dense', (4 * cfg.classes, f))
    s['box_predictor.bias'] = ('bias', (4 * cfg.classes,))
    return s


def gluon_anchors(cfg):
    """RPNAnchorGenerator._generate_anchors: [1, 1, alloc, alloc, 4A], ratio-major then scale."""
    px = py = (cfg.base_size - 1) * 0.5
    base = []
    for r in cfg.ratios:
        for sc in cfg.scales:
            size = cfg.base_size * cfg.base_size / r
            ws = np.round(np.sqrt(size))
            w = (ws * sc - 1) * 0.5
            h = (np.round(ws * r) * sc - 1) * 0.5
            base.append([px - w, py - h, px + w, py + h])
    base = np.array(base)
    off = np.arange(0, cfg.alloc * cfg.stride, cfg.stride)
    ox, oy = np.meshgrid(off, off)
    offsets = np.stack((ox.ravel(), oy.ravel(), ox.ravel(), oy.ravel()), axis=1)
    anchors = base.reshape((1, -1, 4)) + offsets.reshape((-1, 1, 4))
    return anchors.reshape((1, 1, cfg.alloc, cfg.alloc, -1)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Forward


class Net:
    def __init__(self, cfg, params):
        self.cfg = cfg
        self.p = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}
        self.calibrate = False  # batch statistics into the running ones (making random weights)

    def conv(self, x, name, stride=1, pad=0):
        return F.conv2d(x, self.p[name + '.weight'], self.p.get(name + '.bias'), stride, pad)

    def bn(self, x, name):
        if self.calibrate:
            self.p[name + '.running_mean'] = x.mean((0, 2, 3))
            self.p[name + '.running_var'] = x.var((0, 2, 3), unbiased=False)
        g = self.p
        return F.batch_norm(x, g[name + '.running_mean'], g[name + '.running_var'], g[name + '.gamma'], g[name + '.beta'], False, 0.0, BN_EPS)

    def block(self, x, p, stride, first):
        cfg = self.cfg
        if cfg.block == 'bottleneck':
            y = F.relu(self.bn(self.conv(x, p + '.conv1'), p + '.bn1'))
            y = F.relu(self.bn(self.conv(y, p + '.conv2', stride, 1), p + '.bn2'))  # v1b: stride on the 3x3
            y = self.bn(self.conv(y, p + '.conv3'), p + '.bn3')
        else:
            y = F.relu(self.bn(self.conv(x, p + '.conv1', stride, 1), p + '.bn1'))
            y = self.bn(self.conv(y, p + '.conv2', 1, 1), p + '.bn2')
        if first and (p + '.downsample.0.weight' in self.p or p + '.downsample.1.weight' in self.p):
            if cfg.avg_down:
                r = F.avg_pool2d(x, stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else x
                r = self.bn(self.conv(r, p + '.downsample.1'), p + '.downsample.2')
            else:
                r = self.bn(self.conv(x, p + '.downsample.0', stride), p + '.downsample.1')
        else:
            r = x
        return F.relu(y + r)

    def stage(self, x, prefix, index):
        stride = 1 if index == 0 else 2
        for b in range(self.cfg.layers[index]):
            x = self.block(x, '%s.%d' % (prefix, b), stride if b == 0 else 1, b == 0)
        return x

    def features(self, x):
        if self.cfg.deep_stem:
            x = F.relu(self.bn(self.conv(x, 'features.0.0', 2, 1), 'features.0.1'))
            x = F.relu(self.bn(self.conv(x, 'features.0.3', 1, 1), 'features.0.4'))
            x = self.conv(x, 'features.0.6', 1, 1)
        else:
            x = self.conv(x, 'features.0', 2, 3)
        x = F.relu(self.bn(x, 'features.1'))
        x = F.max_pool2d(x, 3, 2, 1)
        for i, prefix in enumerate(['features.4', 'features.5', 'features.6']):
            x = self.stage(x, prefix, i)
        return x

    def top_features(self, x):
        return self.stage(x, 'top_features.0', 3)

    def rpn(self, feat):
        """(raw scores [h*w*A], deltas [h*w*A, 4]): NHWC transposed and reshaped as GluonCV's RPN does."""
        h = F.relu(self.conv(feat, 'rpn.conv1.0', 1, 1))
        score = self.conv(h, 'rpn.score').permute(0, 2, 3, 1).reshape(-1)
        loc = self.conv(h, 'rpn.loc').permute(0, 2, 3, 1).reshape(-1, 4)
        return score, loc

    def heads(self, feat, rois):
        idx = torch.zeros((rois.shape[0], 1), dtype=rois.dtype)
        pooled = roi_align(feat, torch.cat([idx, rois], 1), (14, 14), 1.0 / self.cfg.stride, sampling_ratio=2, aligned=False)
        top = self.top_features(pooled).mean((2, 3))
        cls = F.linear(top, self.p['class_predictor.weight'], self.p['class_predictor.bias'])
        box = F.linear(top, self.p['box_predictor.weight'], self.p['box_predictor.bias'])
        return cls, box.reshape(rois.shape[0], self.cfg.classes, 4)


def corner_to_center(b):
    """BBoxCornerToCenter: width = xmax - xmin (no +1), center = xmin + width / 2."""
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    return b[:, 0] + w / 2, b[:, 1] + h / 2, w, h


def decode(deltas, ref, stds, clamp=None):
    """NormalizedBoxCenterDecoder; `clamp` (zoo only) limits dw, dh before exp."""
    ax, ay, aw, ah = corner_to_center(ref)
    dw = deltas[:, 2] * stds[2]
    dh = deltas[:, 3] * stds[3]
    if clamp is not None:
        dw = torch.clamp(dw, max=clamp)
        dh = torch.clamp(dh, max=clamp)
    ox = deltas[:, 0] * stds[0] * aw + ax
    oy = deltas[:, 1] * stds[1] * ah + ay
    ow = torch.exp(dw) * aw / 2
    oh = torch.exp(dh) * ah / 2
    return torch.stack([ox - ow, oy - oh, ox + ow, oy + oh], 1)


def clip_to_image(b, height, width):
    """BBoxClipToImage: [0, width] x [0, height]."""
    lim = torch.tensor([width, height, width, height], dtype=b.dtype)
    return torch.minimum(torch.clamp(b, min=0), lim)


def iou_one(box, boxes):
    """MXNet box_nms's IoU (corner boxes, no +1, negative sizes give area 0)."""
    def area(b):
        w = b[..., 2] - b[..., 0]
        h = b[..., 3] - b[..., 1]
        return torch.where((w < 0) | (h < 0), torch.zeros_like(w), w * h)
    iw = torch.clamp(torch.minimum(box[2], boxes[:, 2]) - torch.maximum(box[0], boxes[:, 0]), min=0)
    ih = torch.clamp(torch.minimum(box[3], boxes[:, 3]) - torch.maximum(box[1], boxes[:, 1]), min=0)
    inter = iw * ih
    return inter / (area(box) + area(boxes) - inter)


def greedy_nms(boxes, order, thresh, limit=None):
    """Greedy NMS over `order` (indices, best first): a box goes when its IoU with a kept one is > thresh."""
    keep = []
    alive = torch.ones(len(order), dtype=torch.bool)
    ob = boxes[order]
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(int(order[i]))
        if limit is not None and len(keep) >= limit:
            break
        if i + 1 < len(order):
            sup = iou_one(ob[i], ob[i + 1:]) > thresh
            alive[i + 1:] &= ~sup
    return keep


def stable_desc(scores):
    return torch.from_numpy(np.argsort(-scores.numpy(), kind='stable'))


def box_nms(scores, boxes, thresh, topk, valid_thresh):
    """MXNet contrib.box_nms on one batch: scores > valid_thresh, sorted, topk, greedy NMS; kept indices."""
    valid = torch.nonzero(scores > valid_thresh).flatten()
    order = valid[stable_desc(scores[valid])]
    if topk is not None and topk >= 0:
        order = order[:topk]
    return greedy_nms(boxes, order, thresh)


def proposals_gluon(cfg, score, loc, anchors, height, width):
    """RPNProposal + the box_nms and slice of RPN.hybrid_forward: rows [post_nms, 5] (score, box), -1 padded."""
    roi = clip_to_image(decode(loc, anchors, (1.0, 1.0, 1.0, 1.0)), height, width)
    w = roi[:, 2] - roi[:, 0]
    h = roi[:, 3] - roi[:, 1]
    invalid = (w < cfg.rpn_min_size) | (h < cfg.rpn_min_size)
    s = torch.where(invalid, -torch.ones_like(score), torch.sigmoid(score))
    roi = torch.where(invalid[:, None], -torch.ones_like(roi), roi)
    keep = box_nms(s, roi, cfg.rpn_nms, cfg.rpn_pre_nms, 0.0)[: cfg.rpn_post_nms]
    rows = -torch.ones((cfg.rpn_post_nms, 5))
    rows[: len(keep), 0] = s[keep]
    rows[: len(keep), 1:] = roi[keep]
    return rows, len(keep)


def proposals_zoo(cfg, score, loc, anchors, height, width):
    """zoo's order: top-k logits, decode (clamped), clip, min size, NMS."""
    top = stable_desc(score)[: cfg.rpn_pre_nms]
    roi = clip_to_image(decode(loc[top], anchors[top], (1.0, 1.0, 1.0, 1.0), BBOX_CLIP), height, width)
    w = roi[:, 2] - roi[:, 0]
    h = roi[:, 3] - roi[:, 1]
    ok = torch.nonzero((w >= cfg.rpn_min_size) & (h >= cfg.rpn_min_size)).flatten()
    keep = ok[greedy_nms(roi[ok], torch.arange(len(ok)), cfg.rpn_nms, cfg.rpn_post_nms)] if len(ok) else ok
    return roi[keep], score[top][keep]


def detections_gluon(cfg, cls, box, rois, height, width):
    """softmax, MultiPerClassDecoder (> 0.01), per-class decode and box_nms; all survivors; then clipped."""
    probs = torch.softmax(cls, -1)
    out = []
    for c in range(cfg.classes):
        s = probs[:, c + 1]
        s = torch.where(s > 0.01, s, torch.zeros_like(s))
        b = decode(box[:, c], rois, (0.1, 0.1, 0.2, 0.2))
        for k in box_nms(s, b, cfg.nms, cfg.nms_topk, 0.0001):
            out.append((c, float(s[k]), clip_to_image(b[k:k + 1], height, width)[0].tolist()))
    return out


def detections_zoo(cfg, cls, box, rois, height, width):
    probs = torch.softmax(cls, -1)
    picked = []
    for c in range(cfg.classes):
        s = probs[:, c + 1]
        b = clip_to_image(decode(box[:, c], rois, (0.1, 0.1, 0.2, 0.2), BBOX_CLIP), height, width)
        cand = torch.nonzero(s > 0.01).flatten()
        order = cand[stable_desc(s[cand])]
        for k in greedy_nms(b, order, cfg.nms):
            picked.append((c, float(s[k]), b[k].tolist()))
    order = sorted(range(len(picked)), key=lambda i: (-picked[i][1], i))[: cfg.max_detections]
    return [picked[i] for i in order]


def forward(net, x):
    cfg = net.cfg
    alloc = torch.from_numpy(gluon_anchors(cfg))
    images = []
    with torch.no_grad():
        for n in range(x.shape[0]):
            xi = x[n:n + 1]
            H, W = xi.shape[2], xi.shape[3]
            feat = net.features(xi)
            h, w = feat.shape[2], feat.shape[3]
            anchors = alloc[:, :, :h, :w].reshape(-1, 4)  # slice_like(anchors, feat, axes=(2, 3))
            score, loc = net.rpn(feat)
            rows, valid = proposals_gluon(cfg, score, loc, anchors, H, W)
            cls_g, box_g = net.heads(feat, rows[:, 1:])
            zb, zs = proposals_zoo(cfg, score, loc, anchors, H, W)
            if len(zb):
                cls_z, box_z = net.heads(feat, zb)
                dz = detections_zoo(cfg, cls_z, box_z, zb, H, W)
            else:
                dz = []
            dg = detections_gluon(cfg, cls_g, box_g, rows[:, 1:], H, W)
            images.append({
                'feature': [h, w],
                'anchors': anchors.flatten().tolist(),
                'rpn_logits': score.tolist(),
                'rpn_deltas': loc.flatten().tolist(),
                'proposals_gluoncv': {'boxes': rows[:valid, 1:].flatten().tolist(), 'scores': rows[:valid, 0].tolist(), 'padding': cfg.rpn_post_nms - valid},
                'proposals_zoo': {'boxes': zb.flatten().tolist(), 'logits': zs.tolist()},
                'detections_gluoncv': pack(dg),
                'detections_zoo': pack(dz),
            })
    return images


def pack(dets):
    return {'classes': [d[0] for d in dets], 'scores': [d[1] for d in dets], 'boxes': [v for d in dets for v in d[2]]}


# ------------------------------------------------------------------------------------------------
# Random weights of ordinary scale: He-normal convolutions, batch norms calibrated on the images
# (then perturbed), heads scaled to logits and deltas of a chosen spread.


def random_params(cfg, x, rng):
    spec = shapes(cfg)
    params = {}
    for name, (kind, shape) in spec.items():
        if kind == 'conv' or kind == 'dense':
            fan_in = int(np.prod(shape[1:]))
            params[name] = rng.normal(0, math.sqrt(2.0 / fan_in), shape)
        elif kind == 'bias':
            params[name] = rng.normal(0, 0.1, shape)
        else:
            leaf = name.rsplit('.', 1)[1]
            if leaf == 'gamma':
                params[name] = rng.uniform(0.2, 0.4, shape) if kind == 'bn-last' else rng.uniform(0.7, 1.3, shape)
            elif leaf == 'beta':
                params[name] = rng.normal(0, 0.1, shape)
            elif leaf == 'running_mean':
                params[name] = np.zeros(shape)
            else:
                params[name] = np.ones(shape)
    params = {k: v.astype(np.float32) for k, v in params.items()}
    net = Net(cfg, params)
    with torch.no_grad():
        net.calibrate = True
        feat = net.features(x)
        net.top_features(feat)
        net.calibrate = False
        # Running statistics near, not at, the images' own.
        for name in list(net.p):
            if name.endswith('.running_mean'):
                std = torch.sqrt(net.p[name.replace('running_mean', 'running_var')] + BN_EPS)
                net.p[name] = net.p[name] + torch.from_numpy(rng.normal(0, 0.1, tuple(std.shape)).astype(np.float32)) * std
            elif name.endswith('.running_var'):
                net.p[name] = net.p[name] * torch.from_numpy(rng.uniform(0.8, 1.25, tuple(net.p[name].shape)).astype(np.float32))
        feat = net.features(x)
        h = F.relu(net.conv(feat, 'rpn.conv1.0', 1, 1))
        for name, spread in (('rpn.score', 1.5), ('rpn.loc', 0.15)):
            out = net.conv(h, name)
            k = spread / float(out.std())
            net.p[name + '.weight'] = net.p[name + '.weight'] * k
            net.p[name + '.bias'] = net.p[name + '.bias'] * spread
        top = net.top_features(feat).mean((2, 3))
        for name, spread in (('class_predictor', 2.0), ('box_predictor', 1.0)):
            out = F.linear(top, net.p[name + '.weight'])
            k = spread / float(out.std())
            net.p[name + '.weight'] = net.p[name + '.weight'] * k
            net.p[name + '.bias'] = net.p[name + '.bias'] * spread
    return {k: v.numpy().astype(np.float32) for k, v in net.p.items()}


def smooth_images(n, height, width, rng):
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    x = np.zeros((n, 3, height, width))
    for i in range(n):
        for c in range(3):
            for _ in range(6):
                fx, fy, ph, a = rng.uniform(0.5, 6), rng.uniform(0.5, 6), rng.uniform(0, 6.28), rng.normal()
                x[i, c] += a * np.sin(fx * xx / width * 6.28 + fy * yy / height * 6.28 + ph)
            x[i, c] += 0.3 * rng.normal(size=(height, width))
    return x.astype(np.float32)


def network_args(p):
    p.add_argument('--block', choices=['bottleneck', 'basic'], default='bottleneck')
    p.add_argument('--layers', default='3,4,6,3')
    p.add_argument('--widths', default='64,128,256,512', help='planes per stage (GluonCV: 64,128,256,512)')
    p.add_argument('--stem', choices=['7x7', 'deep'], default='7x7')
    p.add_argument('--stem-width', type=int, default=32, help='deep stem: its first convolutions (v1c/v1d: 32)')
    p.add_argument('--avg-down', type=int, default=0)
    p.add_argument('--classes', type=int, default=20)
    p.add_argument('--rpn-channels', type=int, default=1024)
    p.add_argument('--scales', default='2,4,8,16,32')
    p.add_argument('--ratios', default='0.5,1,2')
    p.add_argument('--rpn-pre-nms', type=int, default=6000)
    p.add_argument('--rpn-post-nms', type=int, default=300)
    p.add_argument('--max-detections', type=int, default=100, help='the zoo detections only')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    mk = sub.add_parser('make')
    network_args(mk)
    mk.add_argument('--out', required=True)
    mk.add_argument('--height', type=int, default=160)
    mk.add_argument('--width', type=int, default=224)
    mk.add_argument('--batch', type=int, default=2)
    mk.add_argument('--seed', type=int, default=0)
    rn = sub.add_parser('run')
    network_args(rn)
    rn.add_argument('--weights', required=True)
    rn.add_argument('--input', required=True)
    rn.add_argument('--shape', required=True, help='N,3,H,W of the float32 input')
    rn.add_argument('--out', required=True)
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = Config(a)
    if a.cmd == 'make':
        rng = np.random.default_rng(a.seed)
        x = torch.from_numpy(smooth_images(a.batch, a.height, a.width, rng))
        params = random_params(cfg, x, rng)
        params['rpn.anchor_generator.anchors'] = gluon_anchors(cfg)
        write_params(a.out + '/weights.params', params)
        x.numpy().tofile(a.out + '/input.bin')
        out_file = a.out + '/reference.json'
    else:
        params = read_params(a.weights)
        shape = [int(v) for v in a.shape.split(',')]
        x = torch.from_numpy(np.fromfile(a.input, dtype=np.float32).reshape(shape))
        out_file = a.out
    expected = shapes(cfg)
    got = {k for k in params if k != 'rpn.anchor_generator.anchors'}
    if got != set(expected):
        sys.exit('names differ from the network: missing %s, unexpected %s' % (sorted(set(expected) - got)[:5], sorted(got - set(expected))[:5]))
    for k, (_, shp) in expected.items():
        if tuple(params[k].shape) != tuple(shp):
            sys.exit('%s: shape %s, expected %s' % (k, params[k].shape, shp))
    net = Net(cfg, {k: v for k, v in params.items() if k in expected})
    images = forward(net, x)
    with open(out_file, 'w') as f:
        json.dump({'shape': list(x.shape), 'names': sorted(params), 'images': images}, f)


if __name__ == '__main__':
    main()
