/**
 * Names and checksums as the commands report them: a name for one's own model must read as a name
 * (the resolver reads `x.pth` as a file), and `zoo info` calls a source pinned exactly when `zoo pull`
 * checks a published checksum for it.
 */
import test from 'ava';
import { checkOwnModelName } from '../src/hub/local.js';
import { looksLikePath, resolvePublished } from '../src/hub/resolve.js';
import { UserError } from '../src/errors.js';
import { checksumState } from '../zoo/commands/info.js';
import type { WeightSource } from '../src/hub/models_json.js';

test('a name for one\'s own model that the resolver would read as a file is refused, saying why', (t) => {
  for (const name of ['mine.onnx', 'mine.pth', 'mine.safetensors', 'mine.params', 'mine.zip', 'mine.bin', 'mine.pt', 'MINE.ONNX']) {
    t.true(looksLikePath(name), name);
    const err = t.throws(() => checkOwnModelName(name), { instanceOf: UserError }, name);
    t.is(err!.exitCode, 2, name);
    t.regex(err!.message, /would be read as a file, not a model name \(it ends in \.[a-z]+\)/i, name);
  }
  for (const name of ['fashion-r18d', 'my-r50d.v2', 'r18d.ft_in1k']) {
    t.false(looksLikePath(name), name);
    t.notThrows(() => checkOwnModelName(name), name);
  }
});

test('zoo info calls a torchvision file pinned by the sha256 prefix in its name, as zoo pull treats it', (t) => {
  const base = { format: 'pth', naming: 'torchvision', url: 'https://download.pytorch.org/models/resnet50-0676ba61.pth', host: 'torchvision' };
  const tv = checksumState({ ...base, sha256Prefix: '0676ba61' } as unknown as WeightSource);
  t.true(tv.pinned);
  t.regex(tv.text, /sha256 starting 0676ba61 \(pinned by the file name's prefix/);
  const none = checksumState({ ...base, url: 'https://huggingface.co/timm/x/resolve/main/model.safetensors', format: 'safetensors', naming: 'timm' } as unknown as WeightSource);
  t.false(none.pinned);
  const full = checksumState({ ...base, sha256: 'a'.repeat(64), sha256Prefix: 'aaaaaaaa' } as unknown as WeightSource);
  t.true(full.pinned);
  t.regex(full.text, /^sha256 a{64} \(pinned\)$/);
});

test('a pull of an unknown name says what a pull takes, with the published names near it', async (t) => {
  const err = await t.throwsAsync(resolvePublished('resnet50d-bestt', { command: 'zoo pull' }), { instanceOf: UserError });
  t.is(err!.exitCode, 2);
  t.regex(err!.message, /^no published model 'resnet50d-bestt' in models\.json\. Did you mean: resnet50d-best\b.*\? zoo pull takes a published name, alias or timm id \('zoo list --published'\)\.$/);
  t.false(/architecture|\.onnx|run directory/.test(err!.message), err!.message);
  const timm = await t.throwsAsync(resolvePublished('timm/resnet50d.nothing_in1k', { command: 'zoo pull' }), { instanceOf: UserError });
  t.regex(timm!.message, /^no published model 'timm\/resnet50d\.nothing_in1k' in models\.json \(as a timm id\)/);
});
