/**
 * Finding files of the package at run time. Code runs from dist/src/... (or another build directory,
 * or node_modules/@zoo-ml/zoo/dist/src/... when installed), so paths are found by walking up to the package root.
 */
import path from 'node:path';
import { existsSync } from 'node:fs';

/**
 * The nearest directory at or above `start` that holds a package.json and `relative`; the path of
 * `relative` there. Pure apart from the `exists` probe, so it can be tested on made-up trees.
 */
export function findPackageDir(start: string, relative: string, exists: (p: string) => boolean = existsSync): string | undefined {
  let dir = path.resolve(start);
  for (;;) {
    if (exists(path.join(dir, 'package.json')) && exists(path.join(dir, relative))) return path.join(dir, relative);
    const parent = path.dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}
