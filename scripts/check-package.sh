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
  'dist/src/backend/simd/kernels.wasm', 'dist/src/backend/wasm-worker.cjs', 'data/imagenet_classes.json',
  'native/zoo_dnnl.cc', 'native/binding.gyp', 'native/build.mjs'];
const missing = need.filter((f) => !files.includes(f));
const stray = files.filter((f) => /\.map$|^dist\/(test|scripts)\/|^(src|test|scripts|zoo|docs)\/|^native\/build\/|\.tsbuildinfo$|^\.npmrc$/.test(f));
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
# The package's install step builds zoo's native kernels where oneDNN's headers are, and says why not elsewhere.
grep -q 'zoo native kernels:' "$work/install.log" || fail "the install step printed nothing about zoo's native kernels"
echo "  $(grep 'zoo native kernels:' "$work/install.log" | tail -1)"

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

# 3. The README's library examples (every ```ts block of its "The library" section), compiled by
# TypeScript against the installed package and run in order in the project, as a user would.
(cd "$app" && npm install --prefer-offline --no-audit --no-fund -D "typescript@$(pkgjson ".devDependencies.typescript")" "@types/node@$(pkgjson ".devDependencies['@types/node']")" >"$work/install-dev.log" 2>&1) || { tail -20 "$work/install-dev.log"; fail "npm install of typescript failed"; }
cat >"$app/tsconfig.json" <<'EOF2'
{
  "compilerOptions": {
    "target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext", "strict": true,
    "types": ["node"], "skipLibCheck": true, "outDir": "out"
  },
  "include": ["example*.ts"]
}
EOF2
examples=$(node - "$work/tree/README.md" "$app" "$name" <<'EOF2'
const [readme, app, name] = process.argv.slice(2);
const fs = require('fs');
const text = fs.readFileSync(readme, 'utf8');
const start = text.indexOf('### The library');
if (start < 0) { console.error('README has no "### The library" section'); process.exit(1); }
const end = text.indexOf('\n## ', start);
const blocks = [...text.slice(start, end < 0 ? undefined : end).matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
if (!blocks.length) { console.error('no ```ts block in "The library"'); process.exit(1); }
blocks.forEach((b, i) => fs.writeFileSync(`${app}/example${i + 1}.ts`, b.replaceAll("'@zoo-ml/zoo'", `'${name}'`)));
console.log(blocks.length);
EOF2
) || fail "cannot take the examples out of README.md"
# The image the first example classifies, as a user would have one.
(cd "$app" && node -e "require('sharp')(Buffer.alloc(28 * 28, 0).map((_, i) => (i * 37) % 251), { raw: { width: 28, height: 28, channels: 1 } }).png().toFile('shirt.png')") || fail "cannot write shirt.png"
t0=$(now)
(cd "$app" && npx tsc -p tsconfig.json) || fail "the README's library examples do not compile against the package"
echo "tsc ($examples examples): $(secs "$t0" "$(now)")"
mkdir "$work/tmp"
for i in $(seq 1 "$examples"); do
  t0=$(now)
  out=$(cd "$app" && TMPDIR="$work/tmp" node "out/example$i.js" 2>"$work/example$i.log") || { tail -20 "$work/example$i.log"; fail "the README's library example $i failed"; }
  echo "example $i: $(secs "$t0" "$(now)")"
  echo "$out" | tail -4 | sed 's/^/    /'
done
left=$(ls -A "$work/tmp")
[ -z "$left" ] || fail "the examples left files behind in TMPDIR: $left"
written=$(find /tmp -maxdepth 1 -name 'mat-debug-*.log' -newer "$app/shirt.png" 2>/dev/null | head -3)
[ -z "$written" ] || fail "ONNX Runtime wrote $written"

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
