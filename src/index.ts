/**
 * zoo: the ResNet family of "Bag of Tricks for Image Classification with Convolutional Neural Networks"
 * (He et al., 2019) in TensorFlow.js, exported to ONNX and checked in ONNX Runtime.
 */
export { initBackend, activeBackend, describeBackend, BACKEND_CHOICES } from './backend/index.js';
export type { BackendChoice, BackendInfo, BackendOptions } from './backend/index.js';
export { createModel, modelConfig, Model } from './models/model.js';
export type { CreateModelOptions, ForwardOptions } from './models/model.js';
export { getModelEntry, listModels, registerModel, VARIANTS } from './models/registry.js';
export type { ModelEntry } from './models/registry.js';
export { ResNet } from './models/resnet.js';
export type { ResNetConfig } from './models/resnet.js';
export { countNetwork } from './models/count.js';
export type { NetworkCounts } from './models/count.js';
export type { FeatureInfo, GraphBuilder, NetworkDefinition } from './models/graph.js';
export { UserError } from './errors.js';
export { exportOnnx } from './onnx/export.js';
export type { ExportOptions } from './onnx/export.js';
export { checkExport } from './onnx/check.js';
export type { CheckReport, CheckOptions } from './onnx/check.js';
export { importOnnxFile, importOnnxInto } from './onnx/import.js';
export { runExport } from './onnx/pipeline.js';
export type { ExportJob, ExportResult } from './onnx/pipeline.js';
export { createSession, runClassifier, cudaProviderInstalled } from './runtime/ort.js';
export { trainedLikeInit } from './models/calibrate.js';
export { SGD } from './train/optim.js';
export type { SgdOptions } from './train/optim.js';
