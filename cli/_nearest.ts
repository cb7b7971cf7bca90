/**
 * "Did you mean": the known name nearest to a mistyped one (a command or an
 * option), when it is near enough to be a typo.
 *
 * @module
 */

/**
 * The name a typo most likely meant: the only one it begins (at two letters
 * or more), else the nearest by edit distance when within a third of its
 * length (at least one edit).
 *
 * @param typed What was typed.
 * @param names The known names.
 * @returns The name, or `undefined` when none is near.
 */
export function nearestName(typed: string, names: readonly string[]): string | undefined {
  const t = typed.toLowerCase();
  const prefixed = t.length >= 2 ? names.filter((c) => c.startsWith(t)) : [];
  if (prefixed.length === 1) return prefixed[0];
  const near = names
    .map((c) => ({ c, d: editDistance(t, c) }))
    .sort((a, b) => a.d - b.d)[0];
  return near !== undefined && near.d <= Math.max(1, Math.floor(near.c.length / 3))
    ? near.c
    : undefined;
}

/** Levenshtein distance, with a swap of two neighbours counting as one edit. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        v = Math.min(v, d[i - 2]![j - 2]! + 1);
      }
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}
