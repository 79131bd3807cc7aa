/**
 * Small ONNX files of each task, with zoo's metadata, for the service's tests: a classifier (resnet_test,
 * 4 classes, 32x32 input), a detector (resnet_test Faster R-CNN, 3 classes) and a segmenter (resnet_test
 * FCN, 3 classes). Written once per directory; each takes a second or two to export.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createModel } from '../../src/models/model.js';
import { exportOnnx } from '../../src/onnx/export.js';
import { metadataProps } from '../../src/onnx/metadata.js';
import { createDetector } from '../../src/detection/detector.js';
import { exportDetector } from '../../src/detection/export.js';
import { detectionMetadata } from '../../src/detection/metadata.js';
import { createSegmenter } from '../../src/segmentation/segmenter.js';
import { exportSegmenter } from '../../src/segmentation/export.js';
import { segmentationMetadata } from '../../src/segmentation/metadata.js';
import { setupBackend } from './backend.js';

export const CLASSIFIER_LABELS = ['cat', 'dog', 'bird', 'fish'];
export const DETECTOR_LABELS = ['box', 'ball', 'cup'];
export const SEGMENTER_LABELS = ['background', 'road', 'sky'];
export const CLASSIFIER_PREPROCESSING = { inputSize: 32, resizeShorter: 36, crop: 32, interpolation: 'bilinear' as const, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

export async function writeClassifier(file: string, options: { dynamicSize?: boolean; fp16?: boolean } = {}): Promise<string> {
  const m = createModel('resnet_test', { numClasses: CLASSIFIER_LABELS.length, seed: 7 });
  try {
    const bytes = await exportOnnx(m, {
      imageSize: 32,
      ...(options.fp16 ? { fp16: true } : {}),
      metadata: metadataProps({ arch: 'resnet_test', name: 'serve-test', preprocessing: CLASSIFIER_PREPROCESSING, labels: CLASSIFIER_LABELS }),
    });
    writeFileSync(file, bytes);
    return file;
  } finally {
    m.dispose();
  }
}

export async function writeDetector(file: string): Promise<string> {
  const det = createDetector('resnet_test', DETECTOR_LABELS.length, { seed: 2, config: { rpnChannels: 32 } });
  try {
    const bytes = await exportDetector(det, {
      metadata: detectionMetadata({ arch: 'resnet_test', name: 'serve-det', labels: DETECTOR_LABELS, minSize: 64, maxSize: 96, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }),
    });
    writeFileSync(file, bytes);
    return file;
  } finally {
    det.dispose();
  }
}

export async function writeSegmenter(file: string): Promise<string> {
  const seg = createSegmenter('resnet_test', SEGMENTER_LABELS.length, { seed: 3 });
  try {
    const bytes = await exportSegmenter(seg, { metadata: segmentationMetadata({ arch: 'resnet_test', name: 'serve-seg', labels: SEGMENTER_LABELS, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }) });
    writeFileSync(file, bytes);
    return file;
  } finally {
    seg.dispose();
  }
}

/** The three models in `dir`: classifier.onnx, detector.onnx, segmenter.onnx. */
export async function writeServeModels(dir: string): Promise<{ classifier: string; detector: string; segmenter: string }> {
  await setupBackend();
  return {
    classifier: await writeClassifier(join(dir, 'classifier.onnx')),
    detector: await writeDetector(join(dir, 'detector.onnx')),
    segmenter: await writeSegmenter(join(dir, 'segmenter.onnx')),
  };
}
