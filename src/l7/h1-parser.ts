// HTTP/1.1 framing for the lean engine: llhttp compiled to WebAssembly, as undici ships it
// (undici/lib/llhttp), driven here directly on raw socket bytes — no http.Server, no
// IncomingMessage. One wasm instance serves every parser of the process (each parser is an
// llhttp_t allocated in its memory); callbacks are dispatched to the parser being executed.
//
// llhttp is run strict (no lenient flags), as Node's own http server runs it: Content-Length with
// Transfer-Encoding, a duplicate or invalid Content-Length, bad header bytes and obs-fold are
// errors. Limits on the head (bytes and header count) are weft's, checked as the head arrives.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

// The parts of the WebAssembly API used here (TypeScript's ES lib does not declare them).
interface WasmModule { readonly kind?: 'module' }
interface WasmApi {
  Module: new (bytes: Uint8Array) => WasmModule
  Instance: new (module: WasmModule, imports: Record<string, Record<string, (...args: number[]) => number>>) => { readonly exports: unknown }
}
const WebAssemblyApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly

interface LlhttpConstants {
  readonly ERROR: Readonly<Record<string, number | string>>
  readonly TYPE: { readonly REQUEST: number; readonly RESPONSE: number }
  readonly METHODS: Readonly<Record<string, number>>
}

interface LlhttpExports {
  readonly memory: { readonly buffer: ArrayBuffer }
  llhttp_alloc(type: number): number
  llhttp_free(parser: number): void
  llhttp_execute(parser: number, data: number, length: number): number
  llhttp_finish(parser: number): number
  llhttp_resume(parser: number): void
  llhttp_resume_after_upgrade(parser: number): void
  llhttp_get_error_pos(parser: number): number
  llhttp_get_error_reason(parser: number): number
  llhttp_get_method(parser: number): number
  llhttp_get_http_major(parser: number): number
  llhttp_get_http_minor(parser: number): number
  malloc(size: number): number
  free(pointer: number): void
}

const constants = require('undici/lib/llhttp/constants.js') as LlhttpConstants
const ERROR_OK = 0
export const ERROR_PAUSED = constants.ERROR.PAUSED as number
const ERROR_PAUSED_UPGRADE = constants.ERROR.PAUSED_UPGRADE as number
const METHOD_NAMES: string[] = []
for (const [name, code] of Object.entries(constants.METHODS)) METHOD_NAMES[code] = name
const ERROR_NAMES: string[] = []
for (const [name, code] of Object.entries(constants.ERROR)) if (typeof code === 'number') ERROR_NAMES[code] = `HPE_${name}`

/** Limits on a message head; past them the message is refused (431 for a request). */
export const MAX_HEAD_BYTES = 16 * 1024
export const MAX_HEADERS = 100

/** A parsed message head. */
export interface H1Head {
  /** Requests: the method; responses: ''. */
  readonly method: string
  /** Requests: the target as sent. */
  readonly url: string
  /** Responses: the status code and reason phrase. */
  readonly status: number
  readonly statusText: string
  readonly versionMinor: number
  /** Lowercase names; repeated headers joined with ", " (cookie with "; "), set-cookie as a list. */
  readonly headers: Record<string, string | string[]>
  readonly upgrade: boolean
  /** Whether the connection stays open after this message (HTTP/1.1 without `Connection: close`, or HTTP/1.0 keep-alive). */
  readonly keepAlive: boolean
}

/** What a parser tells its owner. Return values of onHead: 0 go on, 1 the message has no body (a response to HEAD, a 204/304). */
export interface H1Events {
  onHead(head: H1Head): number
  /** Body bytes (chunked coding removed), a view of the received buffer. */
  onBody(chunk: Buffer): void
  /** The message is over; trailers (name, value…) when a chunked body had some. Return ERROR_PAUSED to stop parsing here until `resume()`. */
  onComplete(trailers: readonly string[]): number
}

/** A framing error, with llhttp's code (`HPE_…`) and reason; `tooLarge` when weft's head limits were passed. */
export class H1ParseError extends Error {
  readonly code: string
  readonly tooLarge: boolean

  constructor(code: string, reason: string, tooLarge = false) {
    super(reason)
    this.code = code
    this.tooLarge = tooLarge
  }
}

/** What `execute` ended with. */
export type ExecuteResult =
  | { readonly kind: 'ok' }
  /** Parsing stopped at a message's end (onComplete asked); `rest` is what followed, to feed after `resume()`. */
  | { readonly kind: 'paused'; readonly rest: Buffer }
  /** The message switched protocols: `rest` belongs to the new protocol. */
  | { readonly kind: 'upgrade'; readonly rest: Buffer }
  | { readonly kind: 'error'; readonly error: H1ParseError }

let wasm: LlhttpExports | undefined
let current: H1Parser | undefined
let currentChunk: Buffer | undefined
let currentPointer = 0
let bufferPointer = 0
let bufferSize = 0

function instance(): LlhttpExports {
  if (wasm) return wasm
  let module: WasmModule
  try {
    module = new WebAssemblyApi.Module(require('undici/lib/llhttp/llhttp_simd-wasm.js') as Buffer)
  } catch {
    module = new WebAssemblyApi.Module(require('undici/lib/llhttp/llhttp-wasm.js') as Buffer)
  }
  const slice = (at: number, length: number): Buffer => {
    const chunk = currentChunk!
    const start = at - currentPointer + chunk.byteOffset
    return Buffer.from(chunk.buffer, start, length)
  }
  const created = new WebAssemblyApi.Instance(module, {
    env: {
      wasm_on_message_begin: () => current!.messageBegin(),
      wasm_on_url: (_p: number, at: number, length: number) => current!.text('url', slice(at, length)),
      wasm_on_status: (_p: number, at: number, length: number) => current!.text('status', slice(at, length)),
      wasm_on_header_field: (_p: number, at: number, length: number) => current!.text('field', slice(at, length)),
      wasm_on_header_value: (_p: number, at: number, length: number) => current!.text('value', slice(at, length)),
      wasm_on_headers_complete: (_p: number, status: number, upgrade: number, keepAlive: number) => current!.headersComplete(status, upgrade === 1, keepAlive === 1),
      wasm_on_body: (_p: number, at: number, length: number) => current!.body(slice(at, length)),
      wasm_on_message_complete: () => current!.messageComplete(),
    },
  })
  wasm = created.exports as unknown as LlhttpExports
  return wasm
}

type TextPart = 'url' | 'status' | 'field' | 'value'

/** One connection's parser (requests or responses). Not re-entrant: events must not execute another parser synchronously. */
export class H1Parser {
  private events: H1Events
  private readonly type: 'request' | 'response'
  private pointer: number
  private url = ''
  private statusText = ''
  private raw: string[] = []
  private field = ''
  private value = ''
  /** Whether the last text callback was a value (a new field starts a new pair). */
  private inValue = false
  private inTrailers = false
  private headBytes = 0
  private limitHit = false
  /** close() was called from one of its own events: free once the parser returns. */
  private closing = false

  constructor(type: 'request' | 'response', events: H1Events) {
    const llhttp = instance()
    this.type = type
    this.events = events
    this.pointer = llhttp.llhttp_alloc(type === 'request' ? constants.TYPE.REQUEST : constants.TYPE.RESPONSE)
  }

  /** Parses `chunk`; events fire synchronously. After 'paused', call `resume()` before feeding `rest`. */
  execute(chunk: Buffer): ExecuteResult {
    const llhttp = instance()
    if (this.pointer === 0) return { kind: 'error', error: new H1ParseError('HPE_CLOSED', 'parser closed') }
    if (chunk.length > bufferSize) {
      if (bufferPointer !== 0) llhttp.free(bufferPointer)
      bufferSize = Math.ceil(chunk.length / 4096) * 4096
      bufferPointer = llhttp.malloc(bufferSize)
    }
    new Uint8Array(llhttp.memory.buffer, bufferPointer, chunk.length).set(chunk)
    let code: number
    current = this
    currentChunk = chunk
    currentPointer = bufferPointer
    try {
      code = llhttp.llhttp_execute(this.pointer, bufferPointer, chunk.length)
    } finally {
      current = undefined
      currentChunk = undefined
    }
    const errorPosition = llhttp.llhttp_get_error_pos(this.pointer)
    if (this.closing) this.free()
    if (code === ERROR_OK) return { kind: 'ok' }
    const rest = chunk.subarray(errorPosition - bufferPointer)
    if (code === ERROR_PAUSED) return { kind: 'paused', rest }
    if (code === ERROR_PAUSED_UPGRADE) return { kind: 'upgrade', rest }
    return { kind: 'error', error: this.error(code) }
  }

  private free(): void {
    if (this.pointer === 0) return
    instance().llhttp_free(this.pointer)
    this.pointer = 0
    this.closing = false
  }

  /** Who hears the next messages (a pooled connection's parser serves one exchange after another). */
  setEvents(events: H1Events): void {
    this.events = events
  }

  /** After 'paused': parsing may go on. */
  resume(): void {
    if (this.pointer !== 0) instance().llhttp_resume(this.pointer)
  }

  /** The peer closed: completes a message whose body ends at close; an error when one was cut short. */
  finish(): H1ParseError | undefined {
    if (this.pointer === 0) return undefined
    current = this
    let code: number
    try {
      code = instance().llhttp_finish(this.pointer)
    } finally {
      current = undefined
    }
    if (this.closing) { this.free(); return undefined }
    return code === ERROR_OK || code === ERROR_PAUSED || code === ERROR_PAUSED_UPGRADE ? undefined : this.error(code)
  }

  /** Frees the parser (deferred to the end of `execute`/`finish` when called from one of its events). */
  close(): void {
    if (current === this) { this.closing = true; return }
    this.free()
  }

  private error(code: number): H1ParseError {
    if (this.pointer === 0) return new H1ParseError('HPE_CLOSED', 'parser closed')
    if (this.limitHit) return new H1ParseError('HPE_HEADER_OVERFLOW', `message head over ${MAX_HEAD_BYTES} bytes or ${MAX_HEADERS} headers`, true)
    const llhttp = instance()
    const reasonPointer = llhttp.llhttp_get_error_reason(this.pointer)
    let reason = ''
    if (reasonPointer !== 0) {
      const bytes = new Uint8Array(llhttp.memory.buffer, reasonPointer)
      reason = Buffer.from(bytes.subarray(0, bytes.indexOf(0))).toString('latin1')
    }
    return new H1ParseError(ERROR_NAMES[code] ?? `HPE_${code}`, reason)
  }

  /** @internal */
  messageBegin(): number {
    this.url = ''
    this.statusText = ''
    this.raw = []
    this.field = ''
    this.value = ''
    this.inValue = false
    this.inTrailers = false
    this.headBytes = 0
    return 0
  }

  /** @internal */
  text(part: TextPart, bytes: Buffer): number {
    this.headBytes += bytes.length
    if (!this.inTrailers && this.headBytes > MAX_HEAD_BYTES) { this.limitHit = true; return -1 }
    const text = (bytes as Buffer & { latin1Slice(start: number, end: number): string }).latin1Slice(0, bytes.length)
    switch (part) {
      case 'url': this.url += text; return 0
      case 'status': this.statusText += text; return 0
      case 'field':
        if (this.inValue) this.pushPair()
        this.field += text
        return 0
      case 'value':
        this.inValue = true
        this.value += text
        return 0
    }
  }

  private pushPair(): void {
    this.raw.push(this.field, this.value.trim())
    this.field = ''
    this.value = ''
    this.inValue = false
  }

  /** @internal */
  headersComplete(status: number, upgrade: boolean, keepAlive: boolean): number {
    if (this.inValue || this.field !== '') this.pushPair()
    if (this.raw.length / 2 > MAX_HEADERS) { this.limitHit = true; return -1 }
    const llhttp = instance()
    const rawHeaders = this.raw
    this.raw = []
    this.inTrailers = true
    return this.events.onHead({
      method: this.type === 'request' ? METHOD_NAMES[llhttp.llhttp_get_method(this.pointer)] ?? 'GET' : '',
      url: this.url,
      status,
      statusText: this.statusText,
      versionMinor: llhttp.llhttp_get_http_minor(this.pointer),
      headers: headerMap(rawHeaders),
      upgrade,
      keepAlive,
    })
  }

  /** @internal */
  body(chunk: Buffer): number {
    this.events.onBody(chunk)
    return 0
  }

  /** @internal */
  messageComplete(): number {
    if (this.inValue || this.field !== '') this.pushPair()
    const trailers = this.raw
    this.raw = []
    return this.events.onComplete(trailers)
  }
}

/** Lowercase names; repeats joined as node:http does (", ", cookie "; "), set-cookie kept as a list. */
export function headerMap(raw: readonly string[]): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {}
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase()
    const value = raw[i + 1]!
    const existing = headers[name]
    if (existing === undefined) headers[name] = name === 'set-cookie' ? [value] : value
    else if (Array.isArray(existing)) existing.push(value)
    else headers[name] = `${existing}${name === 'cookie' ? '; ' : ', '}${value}`
  }
  return headers
}
