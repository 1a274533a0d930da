// Running the `weft` command as a user would: bin/weft.js, in an environment without tap's hooks.
import { spawn, spawnSync, type SpawnOptions } from 'node:child_process'
import { fileURLToPath } from 'node:url'

/** The launcher users run. */
export const weftBin = fileURLToPath(new URL('../../bin/weft.js', import.meta.url))

export interface WeftResult { code: number; stdout: string; stderr: string }

/**
 * process.env as a user's shell would pass it: without NODE_OPTIONS, through which tap loads its
 * process-info hook into every Node child (the hook listens for SIGINT and SIGTERM, which hides
 * what a signal does to a weft command), and without tap's own variables.
 */
export function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => key !== 'NODE_OPTIONS' && !key.startsWith('TAP') && !key.startsWith('_TAPJS')))
  return { ...env, ...extra }
}

/** Runs `weft ARGS` to completion under this test's Node (killed after timeoutMs, default 60 s). */
export function runWeft(args: string[], options: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): WeftResult {
  const r = spawnSync(process.execPath, [weftBin, ...args], { encoding: 'utf8', timeout: options.timeoutMs ?? 60_000, env: options.env ?? process.env, ...(options.input !== undefined ? { input: options.input } : {}) })
  return { code: r.status ?? 128, stdout: r.stdout, stderr: r.stderr }
}

/** Starts `node bin/weft.js ARGS` with `node` the given binary (default this test's Node). */
export function spawnWeft(args: string[], options: SpawnOptions & { node?: string } = {}) {
  const { node = process.execPath, ...spawnOptions } = options
  return spawn(node, [weftBin, ...args], spawnOptions)
}
