// The retry buffer: a body streams to the current try as it arrives, and a bounded copy lets a
// retry send it again from the start.
import t from 'tap'
import { PassThrough, type Readable } from 'node:stream'
import { once } from 'node:events'
import { ReplayableBody } from '../src/l7/replay.ts'

function collect(stream: Readable): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = ''
    stream.setEncoding('utf8')
    stream.on('data', (c: string) => { text += c })
    stream.on('end', () => resolve(text))
    stream.on('error', reject)
  })
}

t.test('the first try gets bytes before the body ends (a streaming call is not held back)', async (t) => {
  const source = new PassThrough()
  const body = new ReplayableBody(source, 1024)
  const first = body.open()!
  source.write('hello ')
  const [chunk] = await once(first, 'data') as [Buffer]
  t.equal(chunk.toString(), 'hello ', 'delivered while the client is still sending')
  source.end('world')
  const rest = await collect(first)
  t.equal(rest, 'world')
  t.equal(body.received, 11)
})

t.test('a retry gets the whole body again: what came before, then what still arrives', async (t) => {
  const source = new PassThrough()
  const body = new ReplayableBody(source, 1024)
  const first = body.open()!
  first.resume()
  source.write('one,')
  await once(first, 'data')
  t.ok(body.replayable)
  const second = body.open()!
  t.ok(first.destroyed, 'the failed try\'s stream is cut off')
  source.end('two')
  t.equal(await collect(second), 'one,two')
  const third = body.open()!
  t.equal(await collect(third), 'one,two', 'a body already complete is replayed whole')
})

t.test('past the bound the copy is dropped and the body is not replayed', async (t) => {
  const source = new PassThrough()
  const body = new ReplayableBody(source, 8)
  const first = body.open()!
  const all = collect(first)
  source.end('0123456789abcdef')
  t.equal(await all, '0123456789abcdef', 'the first try still gets everything')
  t.notOk(body.replayable)
  t.equal(body.open(), undefined)
})

t.test('a client that goes away makes the body not replayable and ends the try\'s stream', async (t) => {
  const source = new PassThrough()
  const body = new ReplayableBody(source, 1024)
  const first = body.open()!
  first.on('error', () => {})
  source.write('partial')
  source.destroy()
  await once(first, 'close')
  t.notOk(body.replayable)
})

t.test('backpressure: the client is paused while the try\'s stream is full', async (t) => {
  const source = new PassThrough({ highWaterMark: 16 })
  const body = new ReplayableBody(source, 1 << 20)
  const first = body.open()!
  // Nobody reads `first`: after its buffer fills, the source stops flowing.
  for (let i = 0; i < 10; i++) source.write(Buffer.alloc(64 * 1024, 1))
  await new Promise((resolve) => setImmediate(resolve))
  t.ok(source.isPaused(), 'the source is paused')
  const drained = collect(first)
  source.end()
  t.equal((await drained).length, 10 * 64 * 1024, 'and everything arrives once the try reads')
})

t.test('discardRest: once the exchange has its answer, the client is read to the end and nothing is replayed', async (t) => {
  const source = new PassThrough({ highWaterMark: 16 })
  const body = new ReplayableBody(source, 1 << 20)
  const first = body.open()!
  for (let i = 0; i < 10; i++) source.write(Buffer.alloc(64 * 1024, 1))
  await new Promise((resolve) => setImmediate(resolve))
  t.ok(source.isPaused(), 'paused behind a try that stopped reading')
  body.discardRest()
  t.ok(first.destroyed, 'the try\'s stream is gone')
  source.end(Buffer.alloc(10))
  await once(source, 'end')
  t.equal(body.received, 10 * 64 * 1024 + 10, 'every byte the client sent was read')
  t.equal(body.open(), undefined, 'and there is nothing to replay')
})
