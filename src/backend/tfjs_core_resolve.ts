/**
 * Module resolution hook (node:module register) for tfjs-core's ES module files.
 *
 * tfjs-core's per-op ES modules import each other without file extensions ('./ops/mul'), which Node's
 * ESM loader rejects. Only relative imports made from inside @tensorflow/tfjs-core/dist are touched:
 * '.js' (or '/index.js') is appended; everything else resolves as usual.
 */
type Resolve = (specifier: string, context: { parentURL?: string }) => Promise<unknown>;

export async function resolve(specifier: string, context: { parentURL?: string }, next: Resolve): Promise<unknown> {
  const relative = specifier.startsWith('./') || specifier.startsWith('../');
  if (relative && context.parentURL?.includes('/@tensorflow/tfjs-core/dist/') && !specifier.endsWith('.js')) {
    try {
      return await next(`${specifier}.js`, context);
    } catch {
      return next(`${specifier}/index.js`, context);
    }
  }
  return next(specifier, context);
}
