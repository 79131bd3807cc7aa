#!/usr/bin/env bash
# zoo as a dependency, checked for real: packs the working tree as `npm publish` would (in a copy, so
# the checkout's dist/ is left alone), installs the tarball into a fresh TypeScript project with the
# npm registry alone (the local npm cache first), compiles and runs the README's library example
# there, and reports what the install weighs, package by package.
#
#   npm run check:package
#   ZOO_PACKAGE_SKIP=npmrc         how the new project keeps onnxruntime-node's install script from
#                                  fetching CUDA files outside the npm registry: npmrc (default:
#                                  onnxruntime-node-install=skip in its .npmrc), allow-scripts
#                                  ("allowScripts" in its package.json, npm 11.16 or later), env
#                                  (ONNXRUNTIME_NODE_INSTALL=skip), none (npm 12 blocks it by itself)
#   ZOO_PACKAGE_FROM=HEAD          pack a commit (git archive) instead of the working tree
#   ZOO_PACKAGE_KEEP=1             keep the temporary directory
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
skip=${ZOO_PACKAGE_SKIP:-npmrc}
case "$skip" in npmrc | allow-scripts | env | none) ;; *) echo "ZOO_PACKAGE_SKIP: expected npmrc, allow-scripts, env or none, got '$skip'" >&2; exit 2 ;; esac
work=$(mktemp -d "${TMPDIR:-/tmp}/zoo-package-XXXXXX")
if [ "${ZOO_PACKAGE_KEEP:-}" = 1 ]; then echo "keeping $work"; else trap 'rm -rf "$work"'  EXIT; fi
fail() { echo "check-package: $*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f s", b - a }'; }
pkgjson() { node -p "require('$work/tree/package.json')$1"; }

# 1. Pack a copy of the working tree (tracked files and untracked ones git does not ignore) or of a commit.
t0=$(now)
mkdir "$work/tree"
if [ -n "${ZOO_PACKAGE_FROM:-}" ]; then
  git -C "$root" archive "$ZOO_PACKAGE_FROM" | tar -xf - -C "$work/tree"
else
  (cd "$root" && git ls-files -z -co --exclude-standard | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$work/tree"
fi
ln -s "$root/node_modules" "$work/tree/node_modules"
name=$(pkgjson .name)
echo "npm $(npm --version), node $(node --version), package $name@$(pkgjson .version) from ${ZOO_PACKAGE_FROM:-the working tree}, skip: $skip"
(cd "$work/tree" && npm run build --silent >"$work/build.log" 2>&1) || { tail -20 "$work/build.log"; fail "npm run build failed in a copy of the tree"; }
(cd "$work/tree" && npm pack --ignore-scripts --silent --json --pack-destination "$work" >"$work/pack.json" 2>"$work/pack.log") || { cat "$work/pack.log"; fail "npm pack failed"; }
# npm 11 writes [{...}], npm 12 {"<name>": {...}}.
packed() { node -p "const j = require('$work/pack.json'); (Array.isArray(j) ? j[0] : Object.values(j)[0])$1"; }
tarball="$work/$(packed .filename)"
node - "$work/pack.json" <<'EOF' || fail "the tarball's file list is wrong"
const j = require(process.argv[2]);
const p = Array.isArray(j) ? j[0] : Object.values(j)[0];
const files = p.files.map((f) => f.path);
const need = ['package.json', 'README.md', 'LICENSE', 'models.json', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/zoo/index.js',
  'dist/src/backend/simd/kernels.wasm', 'dist/src/backend/wasm-worker.cjs', 'data/imagenet_classes.json'];
const missing = need.filter((f) => !files.includes(f));
const stray = files.filter((f) => /\.map$|^dist\/(test|scripts)\/|^(src|test|scripts|zoo|docs)\/|\.tsbuildinfo$|^\.npmrc$/.test(f));
if (missing.length) console.error('missing:', missing.join(' '));
if (stray.length) console.error('should not ship:', stray.join(' '));
console.log(`tarball ${(p.size / 1e6).toFixed(2)} MB, unpacked ${(p.unpackedSize / 1e6).toFixed(2)} MB, ${files.length} files`);
process.exit(missing.length || stray.length ? 1 : 0);
EOF
echo "pack: $(secs "$t0" "$(now)")"

# 2. A fresh project that depends on the tarball, installed with the npm registry alone.
app="$work/app"
mkdir "$app"
cat >"$app/package.json" <<'EOF'
{ "name": "zoo-package-check", "version": "1.0.0", "private": true, "type": "module" }
EOF
install_env=()
case "$skip" in
  npmrc) echo 'onnxruntime-node-install=skip' >"$app/.npmrc" ;;
  allow-scripts) node -e "const f='$app/package.json',p=require(f);p.allowScripts={'onnxruntime-node':false};require('fs').writeFileSync(f,JSON.stringify(p,null,2))" ;;
  env) install_env=(ONNXRUNTIME_NODE_INSTALL=skip) ;;
esac
t0=$(now)
(cd "$app" && env "${install_env[@]}" npm install --prefer-offline --no-audit --no-fund --foreground-scripts "$tarball" >"$work/install.log" 2>&1) || { tail -25 "$work/install.log"; fail "npm install of the tarball failed"; }
! grep -qi 'nuget' "$work/install.log" || { grep -i nuget "$work/install.log"; fail "onnxruntime-node's install script reached for nuget"; }
echo "install: $(secs "$t0" "$(now)")"

nm="$app/node_modules"
[ -f "$nm/$name/dist/src/backend/simd/kernels.wasm" ] || fail "kernels.wasm is not installed"
for dev in wabt typescript ava; do
  [ ! -e "$nm/$dev" ] || fail "development dependency $dev was installed"
done
copies=$(find "$nm" -path '*/@tensorflow/tfjs-core/package.json' | wc -l)
[ "$copies" -eq 1 ] || fail "$copies copies of @tensorflow/tfjs-core (tensors of one would be foreign to the other)"
echo "install size (what a dependent gets):"
(cd "$nm" && du -sk -- * .bin 2>/dev/null | awk '$2 !~ /^@/' ; du -sk -- @*/* 2>/dev/null) | sort -rn | awk '{ printf "  %8.1f MB  %s\n", $1 / 1024, $2 }' | head -25
echo "  total $(du -sh "$nm" | cut -f1), $(cd "$app" && npm ls --all --parseable 2>/dev/null | tail -n +2 | wc -l) packages"

# 3. The README's library example, compiled by TypeScript and run.
(cd "$app" && npm install --prefer-offline --no-audit --no-fund -D "typescript@$(pkgjson ".devDependencies.typescript")" "@types/node@$(pkgjson ".devDependencies['@types/node']")" >"$work/install-dev.log" 2>&1) || { tail -20 "$work/install-dev.log"; fail "npm install of typescript failed"; }
cat >"$app/tsconfig.json" <<'EOF'
{
  "compilerOptions": {
    "target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext", "strict": true,
    "types": ["node"], "skipLibCheck": true, "outDir": "out"
  },
  "include": ["example.ts"]
}
EOF
sed "s#@ZOO@#$name#" >"$app/example.ts" <<'EOF'
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, describeBackend, createModel, exportOnnx, checkExport } from '@ZOO@';

const info = await initBackend(); // prints nothing; describeBackend(info) for a line
const model = createModel('resnet50d', { numClasses: 20 });
const logits = model.forward(tf.zeros([1, 224, 224, 3])); // NHWC, normalized
const [c2, c3, c4, c5] = model.features(tf.zeros([1, 224, 224, 3]));
const onnxBytes = exportOnnx(model, { imageSize: 224 });
const report = await checkExport(model, onnxBytes, { imageSize: 224 }); // { maxAbsDiff, passed, ... }

console.log(JSON.stringify({
  pid: process.pid,
  backend: describeBackend(info),
  logits: logits.shape,
  features: [c2, c3, c4, c5].map((t) => t.shape),
  onnxBytes: onnxBytes.length,
  passed: report.passed,
  maxAbsDiff: report.maxAbsDiff,
}));
EOF
t0=$(now)
(cd "$app" && npx tsc -p tsconfig.json) || fail "the README's library example does not compile against the package"
echo "tsc: $(secs "$t0" "$(now)")"
mkdir "$work/tmp"
t0=$(now)
out=$(cd "$app" && TMPDIR="$work/tmp" node out/example.js) || fail "the README's library example failed"
echo "run: $(secs "$t0" "$(now)")"
echo "  $out"
node -e "const r=JSON.parse(process.argv[1]); if (!r.passed) { console.error('checkExport did not pass'); process.exit(1); }" "$out" || fail "checkExport did not pass"
pid=$(node -p "JSON.parse(process.argv[1]).pid" "$out")
left=$(ls -A "$work/tmp")
[ -z "$left" ] && [ ! -e "/tmp/mat-debug-$pid.log" ] || fail "the example left files behind: ${left:-/tmp/mat-debug-$pid.log}"

# 4. The command line from the dependent project: the bin link, and models.json found in the package.
version=$(cd "$app" && npx --no-install zoo --version 2>/dev/null) || fail "npx zoo --version failed"
[ "$version" = "$(pkgjson .version)" ] || fail "npx zoo --version printed '$version'"
(cd "$app" && npx --no-install zoo list --published >"$work/list.log" 2>&1) || { tail -5 "$work/list.log"; fail "npx zoo list --published failed"; }
echo "npx zoo --version: $version; zoo list --published: $(grep -c . "$work/list.log") lines"

# 5. A CommonJS consumer: require() works where Node loads ES modules from require (20.19, 22.12 and
# later); elsewhere Node's error must say to use import().
cjs=$(cd "$app" && node -e "const z = require('$name'); console.log(typeof z.createModel)" 2>&1) || true
cjs_old=$(cd "$app" && node --no-experimental-require-module -e "require('$name')" 2>&1) || true
echo "require(): ${cjs##*$'\n'}; without require(esm): $(echo "$cjs_old" | grep -m1 -o 'ERR_[A-Z_]*' || echo none)"
echo "check-package: ok"
