// Contexts (like a kubeconfig) and where a CLI call connects: flags > environment > context.
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'
import t from 'tap'

import { BusError, contextFilePath, readContext, removeContext, resolveBusOptions, writeContext } from '../src/bus/index.ts'

function tempHome(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'weft-context-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

t.test('the context file: WEFT_CONFIG, then XDG_CONFIG_HOME, then ~/.config', async (t) => {
  t.equal(contextFilePath({ WEFT_CONFIG: '/x/c.json', XDG_CONFIG_HOME: '/xdg', HOME: '/h' }), '/x/c.json')
  t.equal(contextFilePath({ XDG_CONFIG_HOME: '/xdg', HOME: '/h' }), '/xdg/weft/config.json')
  t.equal(contextFilePath({ HOME: '/h' }), '/h/.config/weft/config.json')
})

t.test('write, make current, read, remove; the file is 0600', async (t) => {
  const env = { XDG_CONFIG_HOME: tempHome(t) }
  t.same(readContext(env), { contexts: {} }, 'no file yet: no contexts')
  writeContext('lab-abc', { servers: 'nats://198.18.0.254:4222', user: 'operator', pass: 's3cret' }, { makeCurrent: true }, env)
  writeContext('other', { servers: 'nats://127.0.0.1:4222' }, {}, env)
  const file = readContext(env)
  t.equal(file.current, 'lab-abc')
  t.same(Object.keys(file.contexts), ['lab-abc', 'other'])
  t.equal(statSync(contextFilePath(env)).mode & 0o777, 0o600)
  t.equal(removeContext('lab-abc', env), true)
  t.equal(removeContext('lab-abc', env), false)
  t.same(readContext(env), { contexts: { other: { servers: 'nats://127.0.0.1:4222' } } }, 'current unset with it')
})

t.test('resolution: flags > environment > current context', async (t) => {
  const env = { XDG_CONFIG_HOME: tempHome(t) }
  writeContext('lab', { servers: 'nats://198.18.0.254:4222', user: 'operator', pass: 'lab-pass' }, { makeCurrent: true }, env)
  t.same(resolveBusOptions({}, env), { servers: 'nats://198.18.0.254:4222', user: 'operator', pass: 'lab-pass' }, 'the context alone')
  t.same(
    resolveBusOptions({}, { ...env, WEFT_NATS_USER: 'control', WEFT_NATS_PASSWORD: 'env-pass' }),
    { servers: 'nats://198.18.0.254:4222', user: 'control', pass: 'env-pass' },
    'environment credentials over the context',
  )
  t.same(resolveBusOptions({}, { ...env, WEFT_NATS_URL: 'nats://127.0.0.1:1' }), { servers: 'nats://127.0.0.1:1' }, 'another server does not get the context password')
  t.same(
    resolveBusOptions({ nats: 'nats://127.0.0.1:2', user: 'u', password: 'p' }, { ...env, WEFT_NATS_URL: 'nats://127.0.0.1:1', WEFT_NATS_USER: 'x' }),
    { servers: 'nats://127.0.0.1:2', user: 'u', pass: 'p' },
    'flags over everything',
  )
  const creds = join(env.XDG_CONFIG_HOME, 'node1.json')
  writeFileSync(creds, JSON.stringify({ user: 'node-node1', pass: 'n1' }))
  t.same(resolveBusOptions({ creds }, env), { servers: 'nats://198.18.0.254:4222', user: 'node-node1', pass: 'n1' }, '--creds with the context server')
})

t.test('nothing configured, or a missing creds file, says what to do', async (t) => {
  const env = { XDG_CONFIG_HOME: tempHome(t) }
  const none = t.throws(() => resolveBusOptions({}, env)) as BusError
  t.equal(none.message, 'no NATS configured: bring a lab up (weft lab up) or pass --nats URL')
  t.equal(none.kind, 'not-configured')
  const missing = t.throws(() => resolveBusOptions({ creds: '/nonexistent/creds.json' }, env)) as BusError
  t.equal(missing.message, '--creds /nonexistent/creds.json: no such file; expected JSON {"user": ..., "pass": ...}')
  const unknown = t.throws(() => resolveBusOptions({ context: 'nope' }, env)) as BusError
  t.match(unknown.message, /^no context nope in .*config\.json \(have: none\)$/)
})

t.test('--creds servers is a string, as in a context; a list means the same; anything else is refused', async (t) => {
  const env = { XDG_CONFIG_HOME: tempHome(t) }
  const write = (name: string, body: object): string => {
    const file = join(env.XDG_CONFIG_HOME, name)
    writeFileSync(file, JSON.stringify(body))
    return file
  }
  const one = write('one.json', { servers: 'nats://198.18.0.254:4222', user: 'control', pass: 'c' })
  t.same(resolveBusOptions({ creds: one }, env), { servers: 'nats://198.18.0.254:4222', user: 'control', pass: 'c' })
  const several = write('several.json', { servers: 'nats://127.0.0.1:4222,nats://127.0.0.1:4223', user: 'u', pass: 'p' })
  t.equal(resolveBusOptions({ creds: several }, env).servers, 'nats://127.0.0.1:4222,nats://127.0.0.1:4223', 'several, comma-separated')
  const list = write('list.json', { servers: ['nats://127.0.0.1:4222', 'nats://127.0.0.1:4223'], user: 'u', pass: 'p' })
  t.equal(resolveBusOptions({ creds: list }, env).servers, 'nats://127.0.0.1:4222,nats://127.0.0.1:4223', 'a list is read as the same string')
  const bad = write('bad.json', { servers: 4222, user: 'u', pass: 'p' })
  const error = t.throws(() => resolveBusOptions({ creds: bad }, env)) as BusError
  t.equal(error.message, `--creds ${bad}: servers: expected a string like "nats://host:4222" (several: comma-separated), got 4222`)
  t.equal(error.kind, 'invalid')
})
