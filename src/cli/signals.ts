// The signals that ask a weft command to stop, handled so that a repeated one cannot kill the
// command in the middle of its cleanup. Repeats are common: a terminal's Ctrl-C reaches every
// process of the foreground process group, a supervisor may signal a whole cgroup, users press
// Ctrl-C again when a cleanup takes a few seconds. A listener added with `process.once` is gone
// after the first signal, and Node then restores the default action (exit at once) for the next.

export type StopSignal = 'SIGINT' | 'SIGTERM' | 'SIGHUP'

export const STOP_SIGNALS: readonly StopSignal[] = ['SIGINT', 'SIGTERM', 'SIGHUP']

export interface StopSignals {
  /** Resolves with the first stop signal. */
  readonly first: Promise<StopSignal>
  /** Stops listening; the default actions apply again. Call it only when nothing is left to clean up. */
  dispose(): void
}

/**
 * Listens for SIGINT, SIGTERM and SIGHUP from now until `dispose`. The first resolves `first`;
 * each later one calls `onRepeat` (with how many came so far) instead of ending the process.
 */
export function listenForStop(onRepeat: (signal: StopSignal, count: number) => void = () => {}): StopSignals {
  let count = 0
  let resolveFirst: (signal: StopSignal) => void = () => {}
  const first = new Promise<StopSignal>((resolve) => { resolveFirst = resolve })
  const listener = (signal: NodeJS.Signals): void => {
    count += 1
    if (count === 1) resolveFirst(signal as StopSignal)
    else onRepeat(signal as StopSignal, count)
  }
  for (const signal of STOP_SIGNALS) process.on(signal, listener)
  return {
    first,
    dispose: () => { for (const signal of STOP_SIGNALS) process.off(signal, listener) },
  }
}
