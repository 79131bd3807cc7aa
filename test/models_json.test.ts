/**
 * models.json, the registry of published weights: the real file against the real registry (names,
 * parameter counts and GMACs recomputed from the builder), the ImageNet categories file, lookup by
 * name and alias, and the validator catching broken copies.
 */
import test from 'ava';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { UserError } from '../src/errors.js';
import { countNetwork } from '../src/models/count.js';
import { getModelEntry, listModels } from '../src/models/registry.js';
import { ResNet } from '../src/models/resnet.js';
import {
  defaultModelsJsonPath,
  loadCategories,
  loadModelsJson,
  resolveModel,
  validateModelsJson,
  type ModelsJson,
  type ValidateOptions,
} from '../src/hub/models_json.js';

const file = defaultModelsJsonPath();
const baseDir = dirname(file);
const raw = JSON.parse(readFileSync(file, 'utf8')) as ModelsJson;

function counts(arch: string, size = 224) {
  return countNetwork(new ResNet({ ...getModelEntry(arch).config, numClasses: 1000 }), size);
}

/** Checks computed here from the builder, independently of the module's own registryChecks(). */
const options: ValidateOptions = {
  archNames: listModels(),
  archParams: (arch) => counts(arch).params,
  archGmacs: (arch, size) => counts(arch, size).macs / 1e9,
  baseDir,
};

const copy = (): ModelsJson => structuredClone(raw);
const entry = (doc: ModelsJson, name: string) => doc.models.find((m) => m.name === name)!;

const tmp = mkdtempSync(join(tmpdir(), 'zoo-models-json-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

test('the package models.json is valid against the registry, builder counts and category files', (t) => {
  t.deepEqual(validateModelsJson(raw, options), []);
  const doc = loadModelsJson();
  t.is(doc.version, 1);
  t.true(doc.models.length >= 8);
});

test('the issue\'s entries are there: A, B, C, D (paper best), 152-D teacher, the stronger timm D, torchvision B', (t) => {
  const arch = (n: string) => resolveModel(n).arch;
  t.is(arch('resnet50d-best'), 'resnet50d');
  t.is(arch('resnet152d-teacher'), 'resnet152d');
  t.is(arch('resnet50.gluon_v1_in1k'), 'resnet50');
  t.is(arch('resnet50-a'), 'resnet50');
  t.is(arch('resnet50b.gluon_in1k'), 'resnet50b');
  t.is(arch('resnet50b.tv_in1k'), 'resnet50b');
  t.is(arch('resnet50c.gluon_in1k'), 'resnet50c');
  t.is(arch('resnet50d.ra2_in1k'), 'resnet50d');
  const best = resolveModel('resnet50d-best');
  t.is(best.name, 'resnet50d.gluon_in1k');
  t.deepEqual(best.sources.map((s) => s.format), ['safetensors', 'gluon-zip']);
  t.is(best.metrics[0]!.top1, 79.15);
});

test('GluonCV sources follow its model store: {name}-{sha1[:8]}.zip holding the .params the SHA-1 covers', (t) => {
  // The first 8 hex digits the project's SPEC (section 4) records for each GluonCV model.
  const prefixes: Record<string, string> = {
    resnet50_v1: 'cc729d95',
    resnet50_v1b: '0ecdba34',
    resnet50_v1c: '2a4e0708',
    resnet50_v1d: '117a384e',
    resnet101_v1d: '1b2b825f',
    resnet152_v1d: 'cddbc86f',
    resnet18_v1b: '2d9d980c',
  };
  const seen = new Set<string>();
  for (const m of raw.models) {
    for (const s of m.sources.filter((x) => x.format === 'gluon-zip')) {
      const gluonName = s.member!.replace(/-[0-9a-f]{8}\.params$/, '');
      const prefix = prefixes[gluonName];
      t.truthy(prefix, `${m.name}: ${gluonName} has a SPEC prefix`);
      t.true(s.sha1!.startsWith(prefix!), `${m.name}: ${s.sha1} starts with ${prefix}`);
      t.is(s.url, `https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/gluon/models/${gluonName}-${prefix}.zip`);
      t.is(s.naming, gluonName === 'resnet50_v1' ? 'gluon-v1' : 'gluon-v1b');
      seen.add(gluonName);
    }
  }
  t.deepEqual([...seen].sort(), Object.keys(prefixes).sort());
});

test('timm sources use the hub URL pattern, and every source is https', (t) => {
  for (const m of raw.models) {
    for (const s of m.sources) {
      t.true(s.url.startsWith('https://'), s.url);
      if (s.format === 'safetensors') t.regex(s.url, /^https:\/\/huggingface\.co\/timm\/[a-z0-9_]+\.[a-z0-9_]+\/resolve\/main\/model\.safetensors$/);
    }
  }
  const tv = resolveModel('tv_resnet50').sources.find((s) => s.format === 'pth')!;
  t.is(tv.url, 'https://download.pytorch.org/models/resnet50-0676ba61.pth');
  t.is(tv.sha256Prefix, '0676ba61');
});

test('the ImageNet-1k categories: 1000 unique names in class-index order', (t) => {
  const names = loadCategories('imagenet-1k');
  t.is(names.length, 1000);
  t.is(new Set(names).size, 1000);
  const expected: Record<number, string> = {
    0: 'tench',
    1: 'goldfish',
    207: 'golden retriever',
    281: 'tabby',
    409: 'analog clock',
    517: 'crane',
    999: 'toilet tissue',
  };
  for (const [i, n] of Object.entries(expected)) t.is(names[Number(i)], n, `class ${i}`);
  const doc = JSON.parse(readFileSync(join(baseDir, raw.categories['imagenet-1k']!), 'utf8'));
  t.true(typeof doc.source === 'string' && doc.source.length > 0);
  t.true(typeof doc.license === 'string' && doc.license.length > 0);
  const err = t.throws(() => loadCategories('coco'), { instanceOf: UserError });
  t.regex(err!.message, /imagenet-1k/);
});

test('resolveModel finds entries by name and by alias, and lists near matches for an unknown name', (t) => {
  for (const m of raw.models) {
    t.is(resolveModel(m.name).name, m.name);
    for (const a of m.aliases) t.is(resolveModel(a).name, m.name, a);
  }
  const err = t.throws(() => resolveModel('resnet50d-bset'), { instanceOf: UserError });
  t.is(err!.exitCode, 2);
  t.regex(err!.message, /Did you mean: [^?]*resnet50d-best/);
  const arch = t.throws(() => resolveModel('resnet152d'), { instanceOf: UserError });
  t.regex(arch!.message, /resnet152d\.gluon_in1k/);
});

test('timm ids mean what timm means: resnet50.gluon_in1k is the ResNet-B weights, in every spelling timm uses', (t) => {
  for (const id of ['resnet50.gluon_in1k', 'timm/resnet50.gluon_in1k', 'hf-hub:timm/resnet50.gluon_in1k']) {
    const e = resolveModel(id);
    t.is(e.name, 'resnet50b.gluon_in1k', id);
    t.is(e.arch, 'resnet50b', id);
  }
  t.is(resolveModel('resnet50.tv_in1k').name, 'resnet50b.tv_in1k');
  t.is(resolveModel('timm/resnet50d.gluon_in1k').name, 'resnet50d.gluon_in1k');
  t.is(resolveModel('resnet18.gluon_in1k').arch, 'resnet18b');
  // zoo's ResNet-A weights are not reachable through a timm spelling, and a zoo name is not a timm id.
  t.throws(() => resolveModel('timm/resnet50.gluon_v1_in1k'), { instanceOf: UserError, message: /as a timm id/ });
  t.throws(() => resolveModel('timm/resnet50b.gluon_in1k'), { instanceOf: UserError });
  for (const m of raw.models) if (m.timm) t.is(resolveModel(`timm/${m.timm}`).name, m.name);
});

type Breaker = [what: string, expect: RegExp, breakIt: (doc: ModelsJson) => void];

const breakers: Breaker[] = [
  ['a duplicate alias', /aliases\[0\]: 'resnet50d-best' is already used/, (d) => (entry(d, 'resnet152d.gluon_in1k').aliases[0] = 'resnet50d-best')],
  ['an alias equal to another entry\'s name', /already used/, (d) => entry(d, 'resnet50d.ra2_in1k').aliases.push('resnet50d.gluon_in1k')],
  ['a short sha1', /sources\[1\]\.sha1: expected null or 40/, (d) => (entry(d, 'resnet50d.gluon_in1k').sources[1]!.sha1 = '117a384e')],
  ['an upper-case sha256', /sha256: expected null or 64/, (d) => (entry(d, 'resnet50b.tv_in1k').sources[0]!.sha256 = 'AB'.repeat(32))],
  ['a gluon-zip source without its sha1', /needs GluonCV's 40-hex SHA-1/, (d) => (entry(d, 'resnet50c.gluon_in1k').sources[1]!.sha1 = null)],
  ['a member that does not match the zip', /does not match the zip/, (d) => (entry(d, 'resnet50c.gluon_in1k').sources[1]!.member = 'resnet50_v1d-117a384e.params')],
  ['a sha1 that does not match the file name', /first 8 digits/, (d) => (entry(d, 'resnet50c.gluon_in1k').sources[1]!.sha1 = 'f'.repeat(40))],
  ['a wrong parameter count', /numParams: 25557032 differs from resnet50d's 25576264/, (d) => (entry(d, 'resnet50d.gluon_in1k').numParams = 25557032)],
  ['a wrong GMACs figure', /gmacs: 3\.8 differs/, (d) => (entry(d, 'resnet50c.gluon_in1k').gmacs = 3.8)],
  ['an unknown arch', /arch: 'resnet50x' is not a registered architecture/, (d) => (entry(d, 'resnet50c.gluon_in1k').arch = 'resnet50x')],
  ['a name whose arch part differs from arch', /arch part 'resnet50c' differs from arch 'resnet50d'/, (d) => (entry(d, 'resnet50c.gluon_in1k').arch = 'resnet50d')],
  ['an http URL', /url: expected an https URL/, (d) => (entry(d, 'resnet50d.ra2_in1k').sources[0]!.url = 'http://huggingface.co/timm/resnet50d.ra2_in1k/resolve/main/model.safetensors')],
  ['an unknown format', /format: expected one of/, (d) => ((entry(d, 'resnet50d.ra2_in1k').sources[0] as { format: string }).format = 'ckpt')],
  ['an unknown naming', /naming: expected one of/, (d) => ((entry(d, 'resnet50d.ra2_in1k').sources[0] as { naming: string }).naming = 'keras')],
  ['a naming the format cannot carry', /cannot use gluon-v1b names/, (d) => (entry(d, 'resnet50d.ra2_in1k').sources[0]!.naming = 'gluon-v1b')],
  ['an unknown host', /host: expected one of/, (d) => ((entry(d, 'resnet50d.ra2_in1k').sources[0] as { host: string }).host = 'example')],
  ['a mean of two values', /preprocessing\.mean: expected 3 finite numbers/, (d) => ((entry(d, 'resnet50d.ra2_in1k').preprocessing as { mean: number[] }).mean = [0.5, 0.5])],
  ['a resize that does not follow the crop fraction', /resizeShorter: expected round\(224 \/ 0\.875\) = 256/, (d) => (entry(d, 'resnet50d.ra2_in1k').preprocessing.resizeShorter = 248)],
  ['an unknown interpolation', /interpolation: expected one of/, (d) => ((entry(d, 'resnet50d.ra2_in1k').preprocessing as { interpolation: string }).interpolation = 'lanczos')],
  ['an unknown label set', /categories: expected null or one of imagenet-1k/, (d) => (entry(d, 'resnet50d.ra2_in1k').categories = 'imagenet-21k')],
  ['a class count the label set does not have', /has 1000 names but the entry has 10 classes/, (d) => (entry(d, 'resnet50d.ra2_in1k').numClasses = 10)],
  ['a top-5 below top-1', /top5: expected null or a percentage at least top1/, (d) => (entry(d, 'resnet50d.gluon_in1k').metrics[0]!.top5 = 50)],
  ['a metric without its source', /metrics\[0\]\.source: say where/, (d) => (entry(d, 'resnet50d.gluon_in1k').metrics[0]!.source = '')],
  ['a missing license', /license: expected a non-empty string/, (d) => delete (entry(d, 'resnet50d.gluon_in1k') as Partial<ModelsJson['models'][number]>).license],
  ['no sources', /sources: expected a non-empty array/, (d) => (entry(d, 'resnet50d.gluon_in1k').sources = [])],
  ['a sha256 prefix the file name does not carry', /does not carry it/, (d) => (entry(d, 'resnet50b.tv_in1k').sources[1]!.sha256Prefix = '19c8e357')],
  ['a wrong version', /version: expected 1/, (d) => ((d as { version: number }).version = 2)],
  ['a timm id that means another architecture', /timm: timm's resnet50 is zoo's resnet50b, not resnet50d/, (d) => (entry(d, 'resnet50d.ra2_in1k').timm = 'resnet50.ra2_in1k')],
  ['a name that is another entry\'s timm id', /'resnet50\.gluon_in1k' is already used/, (d) => (entry(d, 'resnet50.gluon_v1_in1k').name = 'resnet50.gluon_in1k')],
  ['a malformed timm id', /timm: expected null or timm's arch\.tag id/, (d) => (entry(d, 'resnet50d.ra2_in1k').timm = 'timm/resnet50d')],
  ['an alias that is an architecture name', /'resnet50d' is an architecture name/, (d) => entry(d, 'resnet50d.ra2_in1k').aliases.push('resnet50d')],
  ['a categories path outside the package', /relative path inside the package/, (d) => (d.categories['imagenet-1k'] = '../imagenet_classes.json')],
];

for (const [what, expected, breakIt] of breakers) {
  test(`the validator catches ${what}`, (t) => {
    const doc = copy();
    breakIt(doc);
    const problems = validateModelsJson(doc, options);
    t.true(problems.some((p) => expected.test(p)), problems.join('\n') || '(no problems reported)');
  });
}

test('loadModelsJson refuses an invalid or unreadable file with every problem listed', (t) => {
  const dir = join(tmp, 'pkg');
  mkdirSync(join(dir, 'data'), { recursive: true });
  writeFileSync(join(dir, 'data', 'imagenet_classes.json'), readFileSync(join(baseDir, raw.categories['imagenet-1k']!)));
  const doc = copy();
  entry(doc, 'resnet50d.gluon_in1k').numParams = 1;
  entry(doc, 'resnet50c.gluon_in1k').arch = 'resnet50x';
  writeFileSync(join(dir, 'models.json'), JSON.stringify(doc));
  const err = t.throws(() => loadModelsJson(join(dir, 'models.json')), { instanceOf: UserError });
  t.regex(err!.message, /numParams/);
  t.regex(err!.message, /resnet50x/);

  writeFileSync(join(dir, 'broken.json'), '{"version": 1,');
  t.throws(() => loadModelsJson(join(dir, 'broken.json')), { instanceOf: UserError, message: /cannot read/ });

  // The same file, valid, loads from another directory with its categories beside it.
  writeFileSync(join(dir, 'good.json'), JSON.stringify(raw));
  t.is(loadModelsJson(join(dir, 'good.json')).models.length, raw.models.length);
  t.is(loadCategories('imagenet-1k', join(dir, 'good.json'))[207], 'golden retriever');
});
