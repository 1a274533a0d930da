// Option tables for the configuration commands: one table per command gives both the parsing
// (node:util parseArgs) and the --help text, so the two cannot disagree.
import { parseArgs } from 'node:util'

import { ConfigError } from '../config/node-config.ts'

export type OptionSpec = {
  type: 'string' | 'boolean'
  short?: string
  multiple?: boolean
  /** Placeholder shown in help: `--nats URL`. */
  arg?: string
  help: string
}

export type OptionTable = Record<string, OptionSpec>

/** Where NATS is: the same three flags on every configuration command (see resolveBusOptions). */
export const CONNECTION_OPTIONS: OptionTable = {
  nats: { type: 'string', arg: 'URL', help: 'NATS server(s) (default: WEFT_NATS_URL, else the current context)' },
  creds: { type: 'string', arg: 'FILE', help: 'credentials, JSON {servers?, user, pass | token, tls?} (default: WEFT_NATS_USER/PASSWORD or the context)' },
  context: { type: 'string', arg: 'NAME', help: 'use this context from the weft config file ($WEFT_CONFIG or ~/.config/weft/config.json)' },
}

export const HELP_OPTION: OptionTable = { help: { type: 'boolean', short: 'h', help: 'show this help' } }

export type CommandSpec = {
  name: string
  usage: string[]
  description: string[]
  options: OptionTable
  /** Lines after the options (examples). */
  examples?: string[]
}

export function commandHelp(spec: CommandSpec): string {
  const lines = spec.usage.map((line, i) => `${i === 0 ? 'usage: ' : '       '}${line}`)
  lines.push('', ...spec.description, '', 'options:')
  for (const [name, option] of Object.entries(spec.options)) {
    const flag = `${option.short ? `-${option.short}, ` : '    '}--${name}${option.arg ? ` ${option.arg}` : ''}`
    lines.push(`  ${flag.padEnd(30)} ${option.help}`)
  }
  if (spec.examples && spec.examples.length > 0) lines.push('', 'examples:', ...spec.examples.map((line) => `  ${line}`))
  return lines.join('\n')
}

export type ParsedOptions = { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] }

/** Parses argv against the command's table; a mistake is one ConfigError line pointing at --help. */
export function parseCommandArgs(spec: CommandSpec, argv: string[], maxPositionals: number): ParsedOptions {
  const options = Object.fromEntries(Object.entries(spec.options).map(([name, option]) => [
    name,
    { type: option.type, multiple: option.multiple ?? false, ...(option.short ? { short: option.short } : {}) },
  ]))
  let parsed: ParsedOptions
  try {
    parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: true }) as ParsedOptions
  } catch (error) {
    throw new ConfigError(`${spec.name}: ${parseArgsProblem(error)} (see weft ${spec.name} --help)`)
  }
  if (parsed.values.help !== true && parsed.positionals.length > maxPositionals) {
    throw new ConfigError(`${spec.name}: unexpected argument "${parsed.positionals[maxPositionals]}" (see weft ${spec.name} --help)`)
  }
  return parsed
}

/**
 * A node:util parseArgs error in our words, one line: `unknown option --bogus`, `unexpected
 * argument extra`, else the first line of its message. The caller adds the command and --help.
 */
export function parseArgsProblem(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code
  const message = (error as Error).message
  // parseArgs quotes what it complains about: "Unknown option '--bogus'. ...".
  const quoted = /'([^']+)'/.exec(message)?.[1] ?? ''
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `unknown option ${quoted}`
  if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') return `unexpected argument ${quoted}`
  return message.split('\n')[0] ?? message
}

/** `-o` values: one of the allowed formats, or a clear error. */
export function outputFormat<T extends string>(command: string, value: string | boolean | string[] | undefined, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new ConfigError(`${command}: -o ${String(value)}: expected one of ${allowed.join(', ')}`)
  }
  return value as T
}
