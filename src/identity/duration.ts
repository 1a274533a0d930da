// Durations on the command line: `24h`, `90m`, `10s`, `1h30m`, `500ms`, `7d`.
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
const DURATION = /^(?:\d+(?:ms|s|m|h|d))+$/

/** Milliseconds, or undefined when `text` is not a positive duration in those units. */
export function parseDuration(text: string): number | undefined {
  if (!DURATION.test(text)) return undefined
  let total = 0
  for (const match of text.matchAll(/(\d+)(ms|s|m|h|d)/g)) total += Number(match[1]) * UNIT_MS[match[2]!]!
  return total > 0 ? total : undefined
}

/** `86400000` -> `24h`, `90000` -> `1m30s`: the shortest exact form. */
export function formatDuration(ms: number): string {
  if (ms <= 0) return '0s'
  const parts: string[] = []
  let rest = ms
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000], ['ms', 1]] as const) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`)
      rest %= size
    }
  }
  return parts.join('')
}
