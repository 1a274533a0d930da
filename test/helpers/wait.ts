// Waiting in tests: poll a condition until a deadline instead of sleeping a fixed time (too short
// under load, too long otherwise), and fail naming what was awaited.

/** Resolves after ms milliseconds. For pacing a loop, not for waiting on an outcome: use `until`. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export interface UntilOptions {
  /** Give up after this long (default 10 s). */
  timeoutMs?: number
  /** Pause between probes (default 50 ms). */
  intervalMs?: number
}

/**
 * Calls probe until it returns a value other than undefined, false or null, and resolves with
 * it. A probe that throws is retried too (a server still starting); at the deadline the error
 * names `what` and the last thing the probe threw.
 */
export async function until<T>(what: string, probe: () => T | undefined | false | null | Promise<T | undefined | false | null>, options: UntilOptions = {}): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 10_000
  const deadline = Date.now() + timeoutMs
  let lastError: unknown
  for (;;) {
    try {
      const value = await probe()
      if (value !== undefined && value !== false && value !== null) return value
    } catch (error) {
      lastError = error
    }
    if (Date.now() > deadline) {
      const cause = lastError === undefined ? '' : ` (last error: ${lastError instanceof Error ? lastError.message : String(lastError)})`
      throw new Error(`waited ${timeoutMs / 1000} s for ${what}${cause}`)
    }
    await sleep(options.intervalMs ?? 50)
  }
}

/** The promise's value, or an error naming `what` if it has not settled within timeoutMs. */
export async function within<T>(what: string, promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`waited ${timeoutMs / 1000} s for ${what}`)), timeoutMs) })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}
