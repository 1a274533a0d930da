// The two things an L7 decision may depend on besides its input: the time and chance. Every
// module takes them as functions, so the proxy passes `performance.now` and `Math.random` and a
// test passes a fake clock and a seeded generator, and asserts on exact outcomes.

/** Milliseconds on a monotonic clock (`performance.now` in the proxy). */
export type Clock = () => number

/** A number in [0, 1), like `Math.random`. */
export type Random = () => number

/**
 * A deterministic generator (mulberry32) for tests and reproducible lab runs: the same seed gives
 * the same sequence on every machine. Not for anything security-related.
 */
export function seededRandom(seed: number): Random {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
