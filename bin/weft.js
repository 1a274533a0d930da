#!/usr/bin/env node
// Launcher for the `weft` command. weft runs on Node >= 22.12 with TypeScript type stripping;
// when this launcher is started by an older system Node (Debian ships 20), it hands over to the
// Node that scripts/setup.sh installed under .weft/bin, passing signals (see below) and the exit
// code through.
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const main = join(root, 'src', 'cli', 'main.ts')
const [major, minor] = process.versions.node.split('.').map(Number)
const modern = major > 22 || (major === 22 && minor >= 18)

// bin/strip-cache.js first: the sources come stripped from its cache (see there).
const stripCache = pathToFileURL(join(root, 'bin', 'strip-cache.js')).href

if (modern) {
  await import(stripCache)
  await import(pathToFileURL(main).href)
} else {
  const node = join(root, '.weft', 'bin', 'node')
  if (!existsSync(node)) {
    console.error(`weft: needs Node.js >= 22.12 (this is ${process.version}); run: bash ${join(root, 'scripts', 'setup.sh')}`)
    process.exit(1)
  }
  // The child stays in this process group, so the terminal treats the pair as one process: it
  // reads the terminal, and Ctrl-C (SIGINT to the whole foreground group) reaches it directly.
  // Passing SIGINT on as well would deliver each Ctrl-C twice, and a second SIGINT means "the user
  // insists" to a command in the middle of its cleanup; so SIGINT is only kept from ending this
  // launcher before the child. SIGTERM and SIGHUP are usually sent to this process alone (kill,
  // a supervisor): they are passed on. To interrupt a weft started without a terminal, signal its
  // process group (kill -INT -PGID) or send SIGTERM.
  const child = spawn(node, ['--disable-warning=ExperimentalWarning', '--import', stripCache, main, ...process.argv.slice(2)], { stdio: 'inherit' })
  const keep = () => {}
  const pass = (signal) => child.kill(signal)
  process.on('SIGINT', keep).on('SIGTERM', pass).on('SIGHUP', pass)
  child.on('exit', (code, signal) => {
    process.off('SIGINT', keep).off('SIGTERM', pass).off('SIGHUP', pass)
    // End the way the child did, so a shell sees the signal (e.g. exit status 130 for SIGINT).
    if (signal) process.kill(process.pid, signal)
    else process.exit(code ?? 1)
  })
}
