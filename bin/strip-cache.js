// weft runs its TypeScript sources directly (Node's type stripping). Stripping loads a compiler
// (amaro, swc built to wasm) into every process that imports a .ts file: ~22 MiB of RSS per node
// daemon and a slower start, paid again by every daemon, control plane and CLI run. This module,
// loaded first (`node --import bin/strip-cache.js ...`, or imported by bin/weft.js), serves each
// .ts file of this checkout from a cache of stripped JavaScript kept in .weft/cache/strip, keyed by
// the file's content, so a process whose sources are all cached never loads the compiler.
// Stripping only replaces types with spaces, so line and column numbers — and import.meta.url —
// are those of the .ts file. A file not in the cache (just edited) is left to Node as usual;
// scripts/setup.sh fills the cache (`node bin/strip-cache.js --warm`), as `npm test` and
// `npm run demo` run it first.
import { createHash } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import module from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const rootUrl = pathToFileURL(root).href + '/'
const cacheDir = join(root, '.weft', 'cache', 'strip')
/** Source directories whose .ts files are cached (node_modules never is). */
const SOURCE_DIRS = ['src', 'bench', 'test']

const keyOf = (source) => createHash('sha256').update(source).digest('hex').slice(0, 40)

function cached(url) {
  if (!url.startsWith(rootUrl) || !url.endsWith('.ts') || url.includes('/node_modules/')) return undefined
  let source
  try {
    source = readFileSync(fileURLToPath(url), 'utf8')
    return readFileSync(join(cacheDir, `${keyOf(source)}.js`), 'utf8')
  } catch {
    return undefined
  }
}

if (typeof module.registerHooks === 'function' && process.argv[2] !== '--warm') {
  module.registerHooks({
    load(url, context, nextLoad) {
      const js = cached(url)
      return js === undefined ? nextLoad(url, context) : { format: 'module', source: js, shortCircuit: true }
    },
  })
}

/** Strips every .ts file of the checkout into the cache, dropping entries no file has any more. */
function warm() {
  mkdirSync(cacheDir, { recursive: true })
  const wanted = new Set()
  const walk = (dir) => {
    let entries
    try { entries = readdirSync(dir, { withFileTypes: true }) } catch { return }
    for (const entry of entries) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) { if (entry.name !== 'node_modules') walk(path); continue }
      if (!entry.name.endsWith('.ts') || entry.name.endsWith('.d.ts')) continue
      const source = readFileSync(path, 'utf8')
      const name = `${keyOf(source)}.js`
      wanted.add(name)
      const target = join(cacheDir, name)
      try { readFileSync(target); continue } catch { /* not cached yet */ }
      const js = module.stripTypeScriptTypes(source, { mode: 'strip' })
      // Written aside and renamed: a process reading the cache never sees half a file.
      writeFileSync(`${target}.tmp`, js)
      renameSync(`${target}.tmp`, target)
    }
  }
  for (const dir of SOURCE_DIRS) walk(join(root, dir))
  for (const name of readdirSync(cacheDir)) if (!wanted.has(name)) rmSync(join(cacheDir, name), { force: true })
  return wanted.size
}

if (process.argv[2] === '--warm' && fileURLToPath(import.meta.url) === process.argv[1]) {
  if (typeof module.stripTypeScriptTypes !== 'function') process.exit(0)
  const count = warm()
  console.log(`strip cache: ${count} TypeScript files ready in ${cacheDir}`)
}
