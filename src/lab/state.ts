// /run/weft/labs/<run>/: state.json (what ls/exec/down need), the daemons' and control's logs,
// nats/ (nats-server's config, log and store) and creds/ (one --creds file per NATS user). Files are replaced atomically so a reader never sees half a file.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { LabError } from './errors.ts'
import { labNames, type LabPlan } from './plan.ts'

/** 2: NATS and weft control (plan.nats, plan.control); no workloads.json. */
export const STATE_VERSION = 2

export interface LabState {
  version: number
  createdAt: string
  /** False while `up` is still building (or if it crashed): `down` does not depend on it. */
  complete: boolean
  /** Whether `up` started the node daemons. */
  daemons: boolean
  /** Host routes `up` added (each a pod range via its node), removed by `down`. */
  hostRoutes: string[]
  plan: LabPlan
}

export function writeJsonAtomic(file: string, value: unknown): void {
  const temporary = `${file}.${process.pid}.tmp`
  writeFileSync(temporary, `${JSON.stringify(value, null, 2)}\n`)
  renameSync(temporary, file)
}

export function writeState(state: LabState): void {
  mkdirSync(state.plan.stateDir, { recursive: true })
  writeJsonAtomic(state.plan.stateFile, state)
}

export function readState(runId: string): LabState {
  const file = `${labNames.stateDir(runId)}/state.json`
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch {
    throw new LabError(`lab ${runId} has no state (${file} is missing); remove what is left of it with \`weft lab down --run-id ${runId}\``)
  }
  let state: LabState
  try {
    state = JSON.parse(text) as LabState
  } catch {
    throw new LabError(`lab ${runId}: ${file} is not valid JSON; remove the lab with \`weft lab down --run-id ${runId}\``)
  }
  if (state.version !== STATE_VERSION || !state.plan) {
    throw new LabError(`lab ${runId}: ${file} has an unknown format (version ${String(state.version)}); remove the lab with \`weft lab down --run-id ${runId}\``)
  }
  return state
}
