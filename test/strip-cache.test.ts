// bin/strip-cache.js: weft's processes read their TypeScript sources stripped from a cache, so
// they never load Node's type stripper (amaro); a source not in the cache is left to Node.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

const ROOT = join(import.meta.dirname, '..')
const STRIP_CACHE = join(ROOT, 'bin', 'strip-cache.js')

/** Runs `script` (an ES module) on this Node, with the cache's hook or without; returns its stdout. */
function run(script: string, withCache: boolean): string {
  const dir = mkdtempSync(join(ROOT, '.weft', 'strip-test-'))
  try {
    const file = join(dir, 'probe.mjs')
    writeFileSync(file, script)
    return execFileSync(process.execPath, [...(withCache ? ['--import', STRIP_CACHE] : []), file], { encoding: 'utf8' }).trim()
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const probe = (module: string): string => `
const m = await import(${JSON.stringify(module)})
console.log(JSON.stringify({ exports: Object.keys(m).sort(), stripper: process.moduleLoadList.some((name) => name.includes('amaro')) }))
`

t.test('after --warm, a process with the hook imports weft\'s sources without loading the stripper', async (t) => {
  execFileSync(process.execPath, ['--disable-warning=ExperimentalWarning', STRIP_CACHE, '--warm'], { encoding: 'utf8' })
  const module = join(ROOT, 'src', 'l7', 'router.ts')
  const cached = JSON.parse(run(probe(module), true)) as { exports: string[]; stripper: boolean }
  const plain = JSON.parse(run(probe(module), false)) as { exports: string[]; stripper: boolean }
  t.equal(plain.stripper, true, 'without the hook Node loads its stripper')
  t.equal(cached.stripper, false, 'with it, not')
  t.same(cached.exports, plain.exports, 'and the module is the same')
  t.ok(cached.exports.includes('compileRouteTables'))
})

t.test('a source that is not in the cache (just edited) is stripped by Node as usual', async (t) => {
  const dir = mkdtempSync(join(ROOT, '.weft', 'strip-fresh-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const module = join(dir, `fresh-${process.pid}.ts`)
  writeFileSync(module, `export const answer: number = ${Date.now() % 1000}\n`)
  const result = JSON.parse(run(probe(module), true)) as { exports: string[]; stripper: boolean }
  t.same(result.exports, ['answer'])
  t.equal(result.stripper, true, 'Node stripped it itself')
})
