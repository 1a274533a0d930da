#!/usr/bin/env node
// Launcher for the `weft` command. weft runs on Node >= 22.12 with TypeScript type stripping;
// when this launcher is started by an older system Node (Debian ships 20), it hands over to the
// Node that scripts/setup.sh installed under .weft/bin, passing signals and the exit code through.
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const main = join(root, 'src', 'cli', 'main.ts')
const [major, minor] = process.versions.node.split('.').map(Number)
const modern = major > 22 || (major === 22 && minor >= 18)

if (modern) {
  await import(pathToFileURL(main).href)
} else {
  const node = join(root, '.weft', 'bin', 'node')
  if (!existsSync(node)) {
    console.error(`weft: needs Node.js >= 22.12 (this is ${process.version}); run: bash ${join(root, 'scripts', 'setup.sh')}`)
    process.exit(1)
  }
  const child = spawn(node, ['--disable-warning=ExperimentalWarning', main, ...process.argv.slice(2)], { stdio: 'inherit' })
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal))
  child.on('exit', (code, signal) => {
    if (signal) process.kill(process.pid, signal)
    else process.exit(code ?? 1)
  })
}
