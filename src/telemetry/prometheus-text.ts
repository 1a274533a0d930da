// Reads the Prometheus text exposition format back into samples: the demo, tests and benchmarks
// use it to read a node's /metrics.
export interface Sample { name: string; labels: Record<string, string>; value: number }

export function parsePrometheusText(text: string): Sample[] {
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line)
    if (!m) continue
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, '$1')
    samples.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return samples
}

/** Sum of the samples of one metric whose labels include all of `match`. */
export function sumSamples(samples: Sample[], name: string, match: Record<string, string>): number {
  let total = 0
  for (const s of samples) {
    if (s.name !== name) continue
    if (Object.entries(match).every(([k, v]) => s.labels[k] === v)) total += s.value
  }
  return total
}
