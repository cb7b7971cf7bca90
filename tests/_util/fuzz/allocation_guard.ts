/**
 * The memory oracle of the mutation campaign: no allocation sized by an
 * untrusted field. Inside the campaign's worker, the global typed-array and
 * `ArrayBuffer` constructors are replaced by proxies that refuse (and
 * record) any allocation above a cap, with the stack of the allocating
 * code. The inputs of the campaign are a few MiB at most, so a legitimate
 * buffer never comes near the cap; a length field mutated to 2^31 or 2^53
 * that reaches `new Uint8Array(n)` does.
 *
 * Only code that looks the constructors up on the global object at call
 * time is covered (all of `src/` and `cli/`); the runtime's own internals use
 * their captured originals.
 *
 * @module
 */

/** One refused allocation. */
export interface RefusedAllocation {
  /** The constructor (`Uint8Array`, `ArrayBuffer`, …). */
  constructor: string;
  /** The byte length asked for. */
  byteLength: number;
  /** Where it was asked for. */
  stack: string;
}

/** The error thrown in place of a refused allocation. */
export class AllocationRefused extends Error {
  /** The error class name. */
  override name = "AllocationRefused";
}

const GUARDED = [
  "ArrayBuffer",
  "SharedArrayBuffer",
  "Uint8Array",
  "Uint8ClampedArray",
  "Int8Array",
  "Uint16Array",
  "Int16Array",
  "Uint32Array",
  "Int32Array",
  "Float32Array",
  "Float64Array",
  "BigUint64Array",
  "BigInt64Array",
] as const;

let refused: RefusedAllocation[] = [];
let cap = Infinity;
let installed = false;

/** Bytes a constructor call would allocate, or 0 when it wraps an existing buffer. */
function requestedBytes(name: string, args: unknown[], bytesPerElement: number): number {
  const first = args[0];
  if (name === "ArrayBuffer" || name === "SharedArrayBuffer") {
    return typeof first === "number" ? first : 0;
  }
  if (typeof first === "number") return first * bytesPerElement;
  if (Array.isArray(first)) return first.length * bytesPerElement;
  if (ArrayBuffer.isView(first)) return (first as { length?: number }).length ?? 0;
  return 0;
}

/**
 * Install the guard on `globalThis` (once per worker; later calls change the cap).
 *
 * @param capBytes Largest allocation allowed.
 */
export function installAllocationGuard(capBytes: number): void {
  cap = capBytes;
  if (installed) return;
  installed = true;
  const g = globalThis as unknown as Record<string, unknown>;
  for (const name of GUARDED) {
    const original = g[name] as (new (...args: unknown[]) => unknown) & {
      BYTES_PER_ELEMENT?: number;
    };
    if (typeof original !== "function") continue;
    const perElement = original.BYTES_PER_ELEMENT ?? 1;
    g[name] = new Proxy(original, {
      construct(target, args, newTarget) {
        const n = requestedBytes(name, args, perElement);
        if (n > cap) {
          const stack = new Error().stack ?? "";
          refused.push({ constructor: name, byteLength: n, stack });
          throw new AllocationRefused(
            `${name} of ${n} bytes refused (cap ${cap}): an allocation sized by the input`,
          );
        }
        return Reflect.construct(target, args, newTarget === g[name] ? target : newTarget);
      },
    });
  }
}

/**
 * Change the cap (e.g. `Infinity` while the campaign itself copies and
 * mutates an input, the cap again while a reader runs).
 *
 * @param capBytes Largest allocation allowed from now on.
 */
export function setAllocationCap(capBytes: number): void {
  cap = capBytes;
}

/**
 * The allocations refused since the last call, and forget them.
 *
 * @returns The refused allocations.
 */
export function takeRefusedAllocations(): RefusedAllocation[] {
  const r = refused;
  refused = [];
  return r;
}
