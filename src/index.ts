/**
 * zoo: the ResNet family of "Bag of Tricks for Image Classification with Convolutional Neural Networks"
 * (He et al., 2019) in TensorFlow.js, exported to ONNX and checked in ONNX Runtime.
 *
 * The first level is what most code needs (as transformers.js' `pipeline` and timm's `create_model`):
 *
 *   pipeline('image-classification', 'resnet50d-best')   a function from images to labels (ONNX Runtime)
 *   predict(model, images)                                 the same, once
 *   pull(name, { onProgress })                             a published model into the cache
 *   fromPretrained(name, { numClasses })                   a tfjs model with its weights, to fine-tune
 *   train(options, { onEpoch, onProgress, signal })       the paper's training, as `zoo train`
 *   pipeline('object-detection', 'runs/det')              a function from images to boxes (ONNX Runtime)
 *   trainDetection({ backbone, data })                     fine-tune a Faster R-CNN, as `zoo det train`
 *   pipeline('image-segmentation', 'runs/seg')            a function from images to per-pixel labels
 *   trainSegmentation({ backbone, data })                  fine-tune an FCN, as `zoo seg train`
 *   serve(['resnet50d-best'], { port: 8000 })             the Open Inference Protocol over HTTP (zoo serve)
 *
 * Below it are the pieces they are made of: backends, the model registry and builder, ONNX export and
 * checks, the resolver and the hub. All share the command line's cache (ZOO_CACHE), settings and
 * errors: a `UserError` is bad input (its message says what), anything else is a bug.
 */
/** tfjs-core, the very instance zoo's models use (a second copy of it would hold no zoo tensors). */
export * as tf from '@tensorflow/tfjs-core';
export { pipeline, predict, PIPELINE_TASKS } from './api/pipelines.js';
export type { ImageClassificationPipeline, ObjectDetectionPipeline, ImageSegmentationPipeline, PipelineOptions, PipelineTask, ClassifyCallOptions } from './api/pipelines.js';
export { trainDetection, evaluateDetection, exportDetection, detect, openDetector, drawDetections } from './api/detection.js';
export type { DetTrainRequest, DetTrainCallbacks, DetTrainOutcome, DetEvalRequest, DetEvalOutcome, ImageDetection, DetectorSession } from './api/detection.js';
export { trainSegmentation, evaluateSegmentation, exportSegmentation, importSegmentation, segment, openSegmenter, writeSegmentation } from './api/segmentation.js';
export type { SegTrainRequest, SegTrainCallbacks, SegTrainOutcome, SegEvalRequest, SegEvalOutcome, SegImportRequest, ImageSegmentation, SegmenterSession } from './api/segmentation.js';
export { serve, SERVE_DEFAULTS } from './api/serve.js';
export type { ServeOptions, ZooServer, ServedModelInfo, ServeTask, TensorMeta } from './api/serve.js';
export { encodeInferRequest, decodeInferResponse } from './serve/protocol.js';
export type { ClientTensor } from './serve/protocol.js';
export { writeTritonRepository } from './serve/triton.js';
export type { TritonRepositoryOptions, TritonRepositoryResult } from './serve/triton.js';
export { pull, fromPretrained } from './api/pretrained.js';
export { train, planTraining } from './api/train.js';
export type { TrainRequest, TrainCallbacks, TrainOutcome, TrainProgress, TrainPlan } from './api/train.js';
export type { EpochRecord, TrainConfig, TrainEvent } from './train/trainer.js';
export { RECIPES, RECIPE_NAMES } from './train/recipes.js';
export type { RecipeName, Tricks } from './train/recipes.js';
export type { PullOptions, PullProgress, PullResult, FromPretrainedOptions, PretrainedModel, LoadOptions } from './api/pretrained.js';
export type { Classification, ImageInput, ImageResult } from './predict/classifier.js';
export { ImageClassifier } from './predict/classifier.js';

export { initBackend, activeBackend, describeBackend, releaseBackend, registerCoreGradients, BACKEND_CHOICES } from './backend/index.js';
export { WebGpuError } from './backend/webgpu.js';
export type { BackendChoice, BackendInfo, BackendOptions } from './backend/index.js';
export { createModel, modelConfig, Model } from './models/model.js';
export type { CreateModelOptions, ForwardOptions, StageFeatures } from './models/model.js';
export { getModelEntry, listModels, registerModel, archFromTimm, VARIANTS } from './models/registry.js';
export type { ModelEntry } from './models/registry.js';
export { ResNet } from './models/resnet.js';
export type { ResNetConfig } from './models/resnet.js';
export { countNetwork } from './models/count.js';
export type { NetworkCounts } from './models/count.js';
export type { FeatureInfo, GraphBuilder, NetworkDefinition } from './models/graph.js';
export { UserError } from './errors.js';

export { resolveModelRef } from './hub/resolve.js';
export type { ResolvedModel, ModelKind, Purpose } from './hub/resolve.js';
export { loadModelsJson, resolveModel as findPublishedModel } from './hub/models_json.js';
export type { PublishedModel } from './hub/models_json.js';
export { hubSettings, readHubSettings } from './hub/settings.js';
export type { HubSettings } from './hub/settings.js';
export { listLocal } from './hub/local.js';

export { exportOnnx } from './onnx/export.js';
export type { ExportOptions } from './onnx/export.js';
export { checkExport } from './onnx/check.js';
export type { CheckReport, CheckOptions } from './onnx/check.js';
export { importOnnxFile, importOnnxInto } from './onnx/import.js';
export { runExport, planExport, exportModel, planImport, runImport } from './onnx/pipeline.js';
export type { ExportJob, ExportResult, ExportModelOptions, PlannedExport, ImportOptions, PlannedImport } from './onnx/pipeline.js';
export { metadataProps, readMetadata, readOnnxMetadata } from './onnx/metadata.js';
export type { ModelMetadata } from './onnx/metadata.js';
export { IMAGENET_PREPROCESSING, preprocessingForSize } from './predict/preprocessing.js';
export type { Preprocessing } from './predict/preprocessing.js';
export { createSession, runSession, runClassifier, cudaProviderInstalled } from './runtime/ort.js';
export type { SessionOptions, Session, HostTensor } from './runtime/ort.js';
export { cudaReadiness } from './runtime/cuda.js';
export type { CudaReadiness } from './runtime/cuda.js';
export { loadWeights } from './io/weights.js';
export type { LoadWeightsOptions, LoadedWeights } from './io/weights.js';
export { openTensors, readTensors, loadTensorsInto, modelBudget } from './convert/convert.js';
export { ByteBudget } from './formats/budget.js';
export { readSafetensors, writeSafetensors } from './formats/safetensors.js';
export { readTorchCheckpoint } from './formats/torch.js';
export { readGluonZip, parseMxnetParams } from './formats/mxnet.js';
export { FormatError } from './formats/types.js';
export { trainedLikeInit } from './models/calibrate.js';
export { SGD } from './train/optim.js';
export { runLoop, TrainingError } from './train/loop.js';
export type { LoopTask, LoopOptions, LoopRecord, LoopEvent, MicroStep } from './train/loop.js';
export { Detector, createDetector } from './detection/detector.js';
export { FasterRcnn, defaultFasterRcnnConfig, StandardRpnHead, StageBoxHead, StandardBoxPredictor } from './detection/faster_rcnn.js';
export type { FasterRcnnConfig, FasterRcnnParts, RpnHead, BoxHead, BoxPredictor, ProposalOptions, DetectionOptions } from './detection/faster_rcnn.js';
export { AnchorGenerator, DEFAULT_ANCHORS } from './detection/anchors.js';
export { exportDetector, checkDetectorExport } from './detection/export.js';
export type { DetectorCheckReport, DetectorCheckCase } from './detection/export.js';
export { trainDetector } from './detection/train.js';
export type { DetTrainConfig, DetEpochRecord, DetTrainEvent } from './detection/train.js';
export { readVoc, VOC_CLASSES } from './detection/voc.js';
export type { VocDataset, VocImage, VocObject } from './detection/voc.js';
export { generateVocSet } from './detection/voc_generate.js';
export { loadDetectionBatch, loadDetectionSample, collateDetection } from './detection/transform.js';
export { evaluateVoc, readVocDetections, writeVocDetections } from './detection/voc_eval.js';
export type { Detection, VocEvalResult } from './detection/voc_eval.js';
export { loadDetectorWeights, findPublishedDetector, pullDetector, createPublishedDetector } from './detection/weights.js';
export { Segmenter, createSegmenter } from './segmentation/segmenter.js';
export { Fcn, FcnHead, defaultFcnConfig } from './segmentation/fcn.js';
export type { FcnConfig } from './segmentation/fcn.js';
export { exportSegmenter, checkSegmenterExport } from './segmentation/export.js';
export type { SegCheckReport, SegCheckCase } from './segmentation/export.js';
export { trainSegmenter, evaluateSegmenter } from './segmentation/train.js';
export type { SegTrainConfig, SegEpochRecord, SegTrainEvent } from './segmentation/train.js';
export { readAde, ADE20K_CLASSES } from './segmentation/ade.js';
export type { SegDataset, SegSample } from './segmentation/ade.js';
export { generateAdeSet } from './segmentation/ade_generate.js';
export { loadSegBatch } from './segmentation/transform.js';
export { SegMetric, evaluatePredictionDir } from './segmentation/metrics.js';
export type { SegEvalResult } from './segmentation/metrics.js';
export { readLabelPng, writeLabelPng } from './segmentation/png.js';
export { palette, colorize, writeOverlay } from './segmentation/overlay.js';
export { loadSegmenterWeights, findPublishedSegmenter, pullSegmenter, createPublishedSegmenter } from './segmentation/weights.js';
export { roiAlign } from './ops/roi_align.js';
export type { RoiAlignOptions } from './ops/roi_align.js';
export type { SgdOptions } from './train/optim.js';
