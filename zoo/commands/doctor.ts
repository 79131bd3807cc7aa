import { Command } from 'commander';
import os from 'node:os';
import { initBackend, describeBackend } from '../../src/backend/index.js';
import { CUDA_PROVIDER_PACKAGE, ORT_VERSION, detectGpu, installCudaProvider, nativeBackends, ortInfo } from '../../src/runtime/doctor.js';
import { createSession } from '../../src/runtime/ort.js';
import { cudaReadiness, cudaReason, type CudaCheck } from '../../src/runtime/cuda.js';
import { createModel } from '../../src/models/model.js';
import { exportOnnx } from '../../src/onnx/export.js';
import { hubSettings } from '../../src/hub/settings.js';
import { embeddedFashionDir } from '../../src/data/embedded.js';
import { action } from '../run.js';
import { UserError } from '../../src/errors.js';
import { loadNative } from '../../src/backend/native/addon.js';
import { nativeKernelsEnabled } from '../../src/backend/native/kernels.js';
import { formatBytes, webgpuReport } from '../../src/backend/webgpu.js';

interface DoctorOpts {
  json?: boolean;
  installCuda?: boolean;
  from?: string;
  target?: string;
}

function bf16Why(n: ReturnType<typeof loadNative>): string {
  if (!n.available) return 'needs the native kernels';
  return `this CPU has neither AMX nor AVX512-BF16; oneDNN runs ${n.info.isa}`;
}

export function doctorCommand(globals: () => { backend?: string }): Command {
  return new Command('doctor')
    .description('what this machine gives zoo: compute backends, ONNX Runtime providers, GPU, cache; installs the CUDA provider')
    .option('--json', 'print JSON')
    .option('--install-cuda', `put ONNX Runtime's CUDA execution provider beside it (from the npm package ${CUDA_PROVIDER_PACKAGE})`)
    .option('--from <tgz>', 'with --install-cuda: a tarball of that package already downloaded (npm pack)')
    .option('--target <dir>', "with --install-cuda: where to put the files (default: onnxruntime-node's binary directory)")
    .addHelpText(
      'after',
      `
ONNX Runtime (onnxruntime-node ${ORT_VERSION}) runs on the CPU out of the box. Its CUDA execution provider
needs three more libraries (built for CUDA 13 and cuDNN 9) that onnxruntime-node's own install script
would fetch from outside the npm registry (zoo's .npmrc skips that). --install-cuda takes the same
official files from the npm registry instead, and records what it installed (zoo-cuda-provider.json
beside them: the ONNX Runtime version they are built for, the package, each file's sha256). 'zoo doctor'
then says whether CUDA can start here, or the first thing it lacks (no NVIDIA GPU, the provider files,
files built for another ONNX Runtime, CUDA 13 or cuDNN 9 libraries the dynamic linker cannot find) and
how to get it; '--device auto' uses the GPU where it can and falls back to the CPU, saying why.

Examples:
  zoo doctor
  zoo doctor --install-cuda
  npm pack ${CUDA_PROVIDER_PACKAGE} && zoo doctor --install-cuda --from ${CUDA_PROVIDER_PACKAGE.replace('@', '-')}.tgz`,
    )
    .action(
      action(async (opts: DoctorOpts) => {
        const installOnly = [opts.from !== undefined ? '--from' : '', opts.target !== undefined ? '--target' : ''].filter(Boolean);
        if (!opts.installCuda && installOnly.length) {
          throw new UserError(`${installOnly.join(' and ')} ${installOnly.length > 1 ? 'go' : 'goes'} with --install-cuda (zoo doctor --install-cuda ${installOnly.map((o) => `${o} ...`).join(' ')})`, { exitCode: 2 });
        }
        if (opts.installCuda) {
          const files = installCudaProvider({
            ...(opts.from ? { from: opts.from } : {}),
            ...(opts.target ? { target: opts.target } : {}),
            log: (l) => process.stderr.write(`${l}\n`),
          });
          process.stdout.write(`installed ${files.length} CUDA execution provider files in ${opts.target ?? ortInfo().binaryDir}\n`);
          if (opts.target) return;
        }
        const backend = await initBackend({ ...(globals().backend ? { backend: globals().backend } : {}), gradients: false });
        const nativeLoad = loadNative(backend.threads);
        const nativeKernels = nativeLoad.available
          ? { available: true, inUse: nativeKernelsEnabled(), addon: nativeLoad.path, ...nativeLoad.info }
          : { available: false, inUse: false, addon: nativeLoad.path, reason: nativeLoad.reason };
        const webgpu = await webgpuReport();
        const ort = ortInfo(undefined, { checksums: true });
        const gpu = detectGpu();
        const cuda = cudaReadiness({ complete: true, checksums: true });
        // A real session on a tiny network: ONNX Runtime loads, and which provider it ends up on.
        const m = createModel('resnet_test');
        let session: { provider: string; note?: string } | { error: string };
        try {
          const s = await createSession(await exportOnnx(m, { imageSize: 32 }), { provider: 'auto' });
          session = { provider: s.provider, ...(s.note ? { note: s.note } : {}) };
          await s.session.release();
        } catch (e) {
          session = { error: (e as Error).message };
        } finally {
          m.dispose();
        }
        const settings = hubSettings();
        let embedded: string;
        try {
          embedded = embeddedFashionDir();
        } catch (e) {
          embedded = `missing (${(e as Error).message})`;
        }
        const report = {
          node: process.version,
          platform: `${process.platform} ${process.arch}`,
          cores: os.availableParallelism(),
          memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
          tfjs: {
            backend: backend.choice,
            tfjsBackend: backend.name,
            detail: backend.detail,
            threads: backend.threads,
            float16: backend.float16,
            skipped: backend.skipped,
            native: nativeBackends(),
            nativeKernels,
            webgpu,
          },
          onnxruntime: { ...ort, session },
          cuda: { ready: cuda.ready, problem: cuda.problem ?? null, fix: cuda.fix ?? null, checks: cuda.checks },
          gpu,
          cache: { dir: settings.cacheDir, offline: settings.offline, hfEndpoint: settings.hfEndpoint ?? null, gluonRepo: settings.gluonRepo ?? null, mirror: settings.mirror ?? null },
          embeddedData: embedded,
        };
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
          return;
        }
        const yes = (b: boolean) => (b ? 'yes' : 'no');
        const lines = [
          `node ${report.node} on ${report.platform}, ${report.cores} cores, ${report.memoryGiB} GiB`,
          `tfjs ${describeBackend(backend)}`,
          `  native backends: ${report.tfjs.native.map((n) => `${n.name} ${n.installed ? 'installed' : 'not installed'}`).join(', ')}`,
          nativeLoad.available
            ? `  native kernels: ${nativeKernelsEnabled() ? 'in use' : `built, not in use (--backend ${backend.choice})`}: oneDNN ${nativeLoad.info.version} ` +
              `(${nativeLoad.info.library ?? 'libdnnl'}; built with ${nativeLoad.info.builtWith}), ISA ${nativeLoad.info.isa}, ${nativeLoad.info.runtime} ${nativeLoad.info.threads} threads`
            : `  native kernels: not in use: ${nativeLoad.reason}`,
          `  bf16 compute (--fp16): ${nativeLoad.available && nativeLoad.info.bf16 ? `yes (oneDNN ${nativeLoad.info.isa})` : `no (${bf16Why(nativeLoad)})`}`,
          `  float16 compute: ${yes(backend.float16)} (FP16 ONNX export works everywhere)`,
          `  WebGPU: ${webgpu.usable === 'no' ? `no: ${webgpu.reason}` : webgpu.reason}`,
          ...(webgpu.adapter
            ? [`    limits: largest tensor ${formatBytes(webgpu.adapter.limits.maxStorageBufferBindingSize)}, largest buffer ${formatBytes(webgpu.adapter.limits.maxBufferSize)}, ` +
                `workgroup storage ${webgpu.adapter.limits.maxComputeWorkgroupStorageSize / 1024} KiB, ${webgpu.adapter.limits.maxComputeInvocationsPerWorkgroup} invocations per workgroup; ` +
                `timestamp queries ${yes(webgpu.adapter.features.includes('timestamp-query'))}, shader-f16 ${yes(webgpu.adapter.features.includes('shader-f16'))}`]
            : []),
          `    Vulkan drivers: ${webgpu.vulkanDrivers.length ? webgpu.vulkanDrivers.map((f) => f.replace(/^.*\//, '')).join(', ') : 'none found (libvulkan1 and a driver: the GPU vendor\'s, or mesa-vulkan-drivers for lavapipe)'}`,
          `onnxruntime-node ${ort.version}${ort.pinned ? '' : ` (zoo pins ${ORT_VERSION})`}: ${ort.binaryDir}`,
          `  CUDA execution provider files: ${ort.cudaFiles.map((f) => `${f.file.replace('libonnxruntime_providers_', '').replace('.so', '')} ${f.present ? 'present' : 'missing'}`).join(', ')}`,
          ...(ort.cudaVersion ? [`  CUDA provider version: ${ort.cudaVersion.detail}`] : []),
          // The readiness line below already says why CUDA is not used; a note is shown here only when it adds to it.
          `  a session opens on: ${'error' in session ? `nothing (${session.error})` : `${session.provider}${session.note && cuda.ready ? ` (${session.note})` : ''}`}`,
          `GPU: ${gpu.present ? gpu.devices.join('; ') : 'none found (nvidia-smi, /dev/nvidia*)'}`,
          ...(gpu.libraries.length ? [`  CUDA libraries: ${gpu.libraries.join(', ')}`] : gpu.present ? ['  CUDA libraries: none known to ldconfig (CUDA 13 and cuDNN 9 are needed)'] : []),
          `cache: ${settings.cacheDir}${settings.offline ? ' (offline)' : ''}`,
          `embedded data: ${embedded}`,
        ];
        lines.push('', cuda.ready ? 'CUDA: ready (--device auto and cuda run ONNX models on the GPU)' : `CUDA: not ready: ${cudaReason(cuda)}`);
        lines.push(...cuda.checks.map((c) => `  ${checkLine(c)}`));
        process.stdout.write(`${lines.join('\n')}\n`);
      }),
    );
}

const CHECK_NAMES: Record<CudaCheck['check'], string> = {
  platform: 'platform',
  device: 'NVIDIA device',
  'provider-files': 'provider files',
  version: 'provider version',
  libraries: 'CUDA libraries',
};

function checkLine(c: CudaCheck): string {
  return `${c.ok ? 'ok  ' : 'MISS'} ${CHECK_NAMES[c.check]}: ${c.detail}`;
}
