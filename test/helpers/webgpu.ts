/**
 * Whether the WebGPU backend can run here, for tests that need it.
 *
 * It runs where Dawn's Node bindings are installed and a Vulkan adapter answers: a GPU, or Mesa's
 * lavapipe (a CPU fallback adapter, which `--backend webgpu` accepts). Without one the tests skip with
 * the reason, except under ZOO_TEST_WEBGPU=1 (set by .ci/run, which installs lavapipe), where a
 * missing adapter is a failure rather than a silent skip.
 */
import test from 'ava';
import { probeWebGpu } from '../../src/backend/webgpu.js';

export const webgpuProbe = await probeWebGpu(true);
export const webgpuRequired = process.env.ZOO_TEST_WEBGPU === '1';

/** `test.serial` where WebGPU runs, else `test.skip` (after one passing test that says why). */
export function webgpuTest(label: string): typeof test.serial | typeof test.skip {
  if (webgpuProbe.available) return test.serial;
  if (webgpuRequired) {
    test(`${label}: WebGPU is required here (ZOO_TEST_WEBGPU=1) and unavailable`, (t) => t.fail(webgpuProbe.reason));
  } else {
    test(`${label}: no WebGPU adapter here (${webgpuProbe.reason}): skipped`, (t) => t.pass());
  }
  return test.skip;
}
