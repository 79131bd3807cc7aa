/**
 * Errors a user can act on: bad input, a missing file, an unknown model, an unavailable backend.
 * The command line prints their message without a stack trace and exits with `exitCode`; any other
 * error is treated as a bug in zoo.
 */
export class UserError extends Error {
  /** Process exit code for the command line: 2 for usage errors, 1 for everything else. */
  readonly exitCode: number;

  constructor(message: string, options: { exitCode?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'UserError';
    this.exitCode = options.exitCode ?? 1;
  }
}

/** Levenshtein distance, for "did you mean" suggestions. */
export function editDistance(a: string, b: string): number {
  const prev = new Array<number>(b.length + 1);
  for (let j = 0; j <= b.length; j++) prev[j] = j;
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(up + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

/** The candidates closest to `name`: shared prefix or substring first, then small edit distance. */
export function nearMatches(name: string, candidates: Iterable<string>, max = 5): string[] {
  const q = name.toLowerCase();
  const scored: [string, number][] = [];
  for (const c of candidates) {
    const l = c.toLowerCase();
    let score = editDistance(q, l);
    if (l.includes(q) || q.includes(l)) score = Math.min(score, 1 + Math.abs(l.length - q.length) / 10);
    scored.push([c, score]);
  }
  const limit = Math.max(2, Math.ceil(q.length / 3));
  return scored
    .filter(([, s]) => s <= limit)
    .sort((a, b) => a[1] - b[1] || a[0].localeCompare(b[0]))
    .slice(0, max)
    .map(([c]) => c);
}
