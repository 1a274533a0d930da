// The gRPC and WebSocket fixtures the lab tests run in pods, checked on loopback first: as
// functions, and as the standalone processes (`node test/fixtures/X.ts MODE ...`) the pods run.
import t, { type Test } from 'tap'
import http from 'node:http'
import net from 'node:net'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import * as grpc from '@grpc/grpc-js'

import { grpcClient, startGrpcServer } from './fixtures/grpc.ts'
import { checkWebSocketEcho, startWebSocketServer } from './fixtures/websocket.ts'
import { freePort } from '../src/bus/index.ts'

const grpcScript = fileURLToPath(new URL('./fixtures/grpc.ts', import.meta.url))
const websocketScript = fileURLToPath(new URL('./fixtures/websocket.ts', import.meta.url))

/** Runs a fixture CLI to completion; its last stdout line parsed as JSON. */
async function runJson(script: string, args: string[]): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const [code] = await once(child, 'exit') as [number | null]
  const line = stdout.trim().split('\n').pop() ?? ''
  try {
    return { exitCode: code, ...(JSON.parse(line) as Record<string, unknown>) }
  } catch {
    throw new Error(`${script} ${args.join(' ')} exited ${code} and printed ${JSON.stringify(stdout)} (stderr ${stderr})`)
  }
}

/** Starts a fixture server CLI and waits for its `listening` line; killed in teardown. */
async function startCli(t: Test, script: string, args: string[]): Promise<ChildProcess> {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  let output = ''
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); if (/^listening$/m.test(output)) resolve() })
    child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
    child.once('exit', (code) => reject(new Error(`${script} ${args.join(' ')} exited ${code} before listening: ${output}`)))
  })
  return child
}

t.test('grpc fixture: weft.test.Echo as functions', async (t) => {
  const server = await startGrpcServer({ host: '127.0.0.1', port: 0, name: 'alpha' })
  const client = grpcClient(`127.0.0.1:${server.port}`)
  t.teardown(async () => { client.close(); await server.close() })

  const reply = await client.echo('hi')
  t.same([reply.message, reply.server], ['hi', 'alpha'], 'Echo echoes the message and names the server')
  t.match(reply.peer, /127\.0\.0\.1:\d+/)

  const failed = await client.echo('please fail', { status: grpc.status.UNAVAILABLE }).then(() => undefined, (e: unknown) => e as grpc.ServiceError)
  t.equal(failed?.code, grpc.status.UNAVAILABLE, 'the requested status comes back')
  t.equal(failed?.details, 'requested status 14')

  const late = await client.echo('slow', { delayMs: 2000, deadlineMs: 100 }).then(() => undefined, (e: unknown) => e as grpc.ServiceError)
  t.equal(late?.code, grpc.status.DEADLINE_EXCEEDED, 'a delay past the deadline is DEADLINE_EXCEEDED')
  const delayed = await client.echo('delayed', { delayMs: 50, deadlineMs: 5000 })
  t.equal(delayed.message, 'delayed', 'a delay within the deadline answers')

  const replies = await client.chat(['one', 'two', 'three'])
  t.same(replies, [
    { seq: 1, message: 'one', server: 'alpha' },
    { seq: 2, message: 'two', server: 'alpha' },
    { seq: 3, message: 'three', server: 'alpha' },
  ], 'Chat answers each message in order with a sequence number, and ends')
  t.same(await client.chat([]), [], 'a Chat with no messages ends with none')
})

t.test('grpc fixture: the standalone CLI', async (t) => {
  const port = await freePort()
  await startCli(t, grpcScript, ['server', '--host', '127.0.0.1', '--port', String(port), '--name', 'pod-a'])
  const target = `127.0.0.1:${port}`

  const unary = await runJson(grpcScript, ['unary', '--target', target, '--count', '3'])
  t.match(unary, { exitCode: 0, count: 3, ok: 3, codes: { 0: 3 }, servers: { 'pod-a': 3 } })

  const status = await runJson(grpcScript, ['unary', '--target', target, '--count', '2', '--status', '7'])
  t.match(status, { exitCode: 0, count: 2, ok: 0, codes: { 7: 2 }, results: [{ code: 7, details: 'requested status 7' }, { code: 7 }] })

  const chat = await runJson(grpcScript, ['chat', '--target', target, '--messages', '4'])
  t.match(chat, { exitCode: 0, ok: true, sent: 4 })
  t.same((chat.replies as Array<{ seq: number }>).map((r) => r.seq), [1, 2, 3, 4])

  const refused = await runJson(grpcScript, ['unary', '--target', `127.0.0.1:${await freePort()}`])
  t.match(refused, { exitCode: 0, ok: 0, codes: { 14: 1 } }, 'nothing listening: UNAVAILABLE, reported in the JSON')
})

t.test('websocket fixture: echo as functions', async (t) => {
  const server = await startWebSocketServer({ host: '127.0.0.1', port: 0, name: 'ws-a' })
  t.teardown(() => server.close())
  const result = await checkWebSocketEcho(`ws://127.0.0.1:${server.port}/echo/path`, { messages: 5 })
  t.same(result, { ok: true, sent: 6, echoed: 6, mismatches: 0, binaryBytes: 1 << 20, server: 'ws-a', path: '/echo/path' }, '5 text and one 1 MiB binary message echoed')

  // Not a WebSocket server: the check says so instead of hanging or throwing.
  const plain = http.createServer((_req, res) => { res.statusCode = 404; res.end('no') })
  plain.listen(0, '127.0.0.1')
  await once(plain, 'listening')
  t.teardown(() => { plain.closeAllConnections(); plain.close() })
  const refused = await checkWebSocketEcho(`ws://127.0.0.1:${(plain.address() as net.AddressInfo).port}/`)
  t.match(refused, { ok: false, echoed: 0, error: /answered 404 instead of 101/ })
})

t.test('websocket fixture: the standalone CLI', async (t) => {
  const port = await freePort()
  await startCli(t, websocketScript, ['server', '--host', '127.0.0.1', '--port', String(port), '--name', 'pod-b'])
  const result = await runJson(websocketScript, ['client', '--url', `ws://127.0.0.1:${port}/x`, '--messages', '3'])
  t.same(result, { exitCode: 0, ok: true, sent: 4, echoed: 4, mismatches: 0, binaryBytes: 1 << 20, server: 'pod-b', path: '/x' })
  const refused = await runJson(websocketScript, ['client', '--url', `ws://127.0.0.1:${await freePort()}/`])
  t.match(refused, { exitCode: 0, ok: false, error: /ECONNREFUSED/ })
})
