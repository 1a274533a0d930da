// Structured logging: one JSON object per line on stdout, so a node's log can be read by people
// (`jq`) and by collectors alike. `WEFT_LOG_LEVEL` (debug|info|warn|error) sets the threshold.
// The L7 access log (access-log.ts) may share stdout: its lines carry `"type":"access"` and no
// `level` or `msg`, these carry `time`, `level` and `msg` and no `type`.

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
const order: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 }

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void
  info(msg: string, fields?: Record<string, unknown>): void
  warn(msg: string, fields?: Record<string, unknown>): void
  error(msg: string, fields?: Record<string, unknown>): void
}

function envLevel(): LogLevel {
  const v = process.env.WEFT_LOG_LEVEL
  return v === 'debug' || v === 'info' || v === 'warn' || v === 'error' ? v : 'info'
}

export function createLogger(base: Record<string, unknown> = {}, level: LogLevel = envLevel()): Logger {
  const write = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
    if (order[lvl] < order[level]) return
    const line = JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...base, ...fields }, (_k, v: unknown) =>
      typeof v === 'bigint' ? v.toString() : v instanceof Error ? v.message : v)
    process.stdout.write(line + '\n')
  }
  return {
    debug: (m, f) => write('debug', m, f),
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
  }
}
