// Running the `weft` command as a user would: bin/weft.js, in an environment without tap's hooks.
import { spawn, spawnSync, type SpawnOptions } from 'node:child_process'
import { fileURLToPath } from 'node:url'

/** The launcher users run. */
export const weftBin = fileURLToPath(new URL('../../bin/weft.js', import.meta.url))

export interface WeftResult { code: number; stdout: string; stderr: string }

export interface WeftRunOptions {
  /** Default process.env; see userEnv. */
  env?: NodeJS.ProcessEnv
  /** Written to stdin, which is then closed. */
  input?: string
  /** SIGKILL after this long (default 60 s). */
  timeoutMs?: number
}

/**
 * process.env as a user's shell would pass it: without NODE_OPTIONS, through which tap loads its
 * process-info hook into every Node child (the hook listens for SIGINT and SIGTERM, which hides
 * what a signal does to a weft command, and slows the child down), and without tap's variables;
 * with `keepWeftVariables: false` also without WEFT_* (WEFT_NATS_URL and the like from outside).
 */
export function userEnv(extra: Record<string, string> = {}, options: { keepWeftVariables?: boolean } = {}): NodeJS.ProcessEnv {
  const keepWeft = options.keepWeftVariables ?? true
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) =>
    key !== 'NODE_OPTIONS' && !key.startsWith('TAP') && !key.startsWith('_TAPJS') && (keepWeft || !key.startsWith('WEFT_'))))
  return { ...env, ...extra }
}

/** Runs `weft ARGS` to completion under this test's Node, blocking this process meanwhile. */
export function runWeftSync(args: string[], options: WeftRunOptions = {}): WeftResult {
  const r = spawnSync(process.execPath, [weftBin, ...args], { encoding: 'utf8', timeout: options.timeoutMs ?? 60_000, env: options.env ?? process.env, ...(options.input !== undefined ? { input: options.input } : {}) })
  return { code: r.status ?? 128, stdout: r.stdout, stderr: r.stderr }
}

/** Runs `weft ARGS` to completion under this test's Node; this process keeps running meanwhile (a server it hosts can answer). */
export function runWeft(args: string[], options: WeftRunOptions = {}): Promise<WeftResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [weftBin, ...args], { env: options.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code: code ?? 128, stdout, stderr })
    })
    child.stdin.on('error', () => {})
    child.stdin.end(options.input ?? '')
  })
}

/** Starts `node bin/weft.js ARGS` with `node` the given binary (default this test's Node). */
export function spawnWeft(args: string[], options: SpawnOptions & { node?: string } = {}) {
  const { node = process.execPath, ...spawnOptions } = options
  return spawn(node, [weftBin, ...args], spawnOptions)
}
