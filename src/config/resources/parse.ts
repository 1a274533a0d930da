// parseResourceDocuments: a YAML or JSON file of resources -> the valid ones and one error per
// problem. YAML files hold several documents separated by `---`; JSON (which the YAML parser
// reads too) holds one object, an array of objects, or a `kind: List` with `items`. One bad
// document never hides the others: the good ones are returned (for `weft apply --partial`).
import { isMap, isScalar, isSeq, LineCounter, parseAllDocuments, type Document } from 'yaml'

import { show } from './common.ts'
import { resourceKey } from './keys.ts'
import type { Resource } from './kinds.ts'
import { DEFAULT_VALIDATION_CONTEXT, validateResource, type PathSegment, type ValidationContext } from './validate.ts'

export class ResourceError {
  readonly file: string
  /** 1-based, as printed: the first document in the file is document 1. */
  readonly documentIndex: number
  /** Position in a JSON array or a List's items (0-based, printed as `items[i]`), when the document holds several. */
  readonly item: number | undefined
  /** 1-based line of the offending field (or the nearest enclosing one), when known. */
  readonly line: number | undefined
  readonly column: number | undefined
  /** `Service default/reviews`, as far as the document says. */
  readonly resource: string | undefined
  /** Field path like `spec.ports[0].port`; empty for problems with the whole document. */
  readonly path: string
  readonly message: string

  constructor(fields: Omit<ResourceError, 'toString'>) {
    this.file = fields.file
    this.documentIndex = fields.documentIndex
    this.item = fields.item
    this.line = fields.line
    this.column = fields.column
    this.resource = fields.resource
    this.path = fields.path
    this.message = fields.message
  }

  /** `mesh.yaml:12: document 2 (Service default/reviews): spec.ports[0].port: expected a number from 1 to 65535, got "eighty"` */
  toString(): string {
    const where = this.line === undefined ? this.file : this.column === undefined ? `${this.file}:${this.line}` : `${this.file}:${this.line}:${this.column}`
    const item = this.item === undefined ? '' : `, items[${this.item}]`
    const resource = this.resource === undefined ? '' : ` (${this.resource})`
    return `${where}: document ${this.documentIndex}${item}${resource}: ${this.path === '' ? '' : `${this.path}: `}${this.message}`
  }
}

export interface ParsedResources {
  resources: Resource[]
  errors: ResourceError[]
}

export function parseResourceDocuments(text: string, fileName: string, ctx: ValidationContext = DEFAULT_VALIDATION_CONTEXT): ParsedResources {
  const jsonError = /\.json$/i.test(fileName) ? strictJsonError(text) : undefined
  if (jsonError) {
    return { resources: [], errors: [new ResourceError({ file: fileName, documentIndex: 1, item: undefined, line: jsonError.line, column: jsonError.column, resource: undefined, path: '', message: `malformed JSON: ${jsonError.reason}` })] }
  }
  const lineCounter = new LineCounter()
  const parsed = parseAllDocuments(text, { lineCounter, prettyErrors: false, uniqueKeys: true })
  const documents = Array.isArray(parsed) ? parsed : []
  const resources: Resource[] = []
  const errors: ResourceError[] = []
  const seen = new Map<string, string>()

  documents.forEach((doc, index) => {
    const documentIndex = index + 1
    const syntaxError = doc.errors[0]
    if (syntaxError) {
      const position = lineCounter.linePos(syntaxError.pos[0])
      const reason = (syntaxError.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '')
      errors.push(new ResourceError({ file: fileName, documentIndex, item: undefined, line: position.line, column: position.col, resource: undefined, path: '', message: `malformed ${/\.json$/i.test(fileName) ? 'JSON' : 'YAML'}: ${reason}` }))
      return
    }
    let value: unknown
    try {
      value = doc.toJS({ maxAliasCount: 100 })
    } catch (err) {
      errors.push(new ResourceError({ file: fileName, documentIndex, item: undefined, line: undefined, column: undefined, resource: undefined, path: '', message: (err as Error).message }))
      return
    }
    if (value === null || value === undefined) return // an empty document, e.g. after a trailing `---`

    // Several resources in one document: a JSON array, or a List (kubectl's `get -o yaml` output).
    let entries: { value: unknown; item: number | undefined; prefix: PathSegment[] }[]
    if (Array.isArray(value)) {
      entries = value.map((entry, i) => ({ value: entry, item: i, prefix: [i] }))
    } else if (isList(value)) {
      entries = value.items.map((entry, i) => ({ value: entry, item: i, prefix: ['items', i] }))
    } else {
      entries = [{ value, item: undefined, prefix: [] }]
    }

    for (const entry of entries) {
      const label = describe(entry.value)
      const result = validateResource(entry.value, ctx)
      if (!result.ok) {
        for (const error of result.errors) {
          errors.push(new ResourceError({
            file: fileName, documentIndex, item: entry.item, line: lineOf(doc, lineCounter, [...entry.prefix, ...error.segments]), column: undefined,
            resource: label, path: error.path, message: error.message,
          }))
        }
        continue
      }
      const key = resourceKey(result.resource)
      const where = `document ${documentIndex}${entry.item === undefined ? '' : `, items[${entry.item}]`}`
      const first = seen.get(key)
      if (first !== undefined) {
        errors.push(new ResourceError({
          file: fileName, documentIndex, item: entry.item, line: lineOf(doc, lineCounter, entry.prefix), column: undefined,
          resource: label, path: '', message: `defined twice: ${key} is also ${first}`,
        }))
        continue
      }
      seen.set(key, where)
      resources.push(result.resource)
    }
  })
  return { resources, errors }
}

// YAML reads JSON, but also forgives what JSON does not (a missing value, a trailing comma):
// a .json file must also satisfy JSON.parse.
function strictJsonError(text: string): { line: number | undefined; column: number | undefined; reason: string } | undefined {
  try {
    JSON.parse(text)
    return undefined
  } catch (err) {
    const message = (err as Error).message
    const position = /\(line (\d+) column (\d+)\)/.exec(message)
    return { line: position ? Number(position[1]) : undefined, column: position ? Number(position[2]) : undefined, reason: message.replace(/ in JSON at position \d+ \(line \d+ column \d+\)$/, '') }
  }
}

function isList(value: unknown): value is { items: unknown[] } {
  if (typeof value !== 'object' || value === null) return false
  const { kind, items } = value as { kind?: unknown; items?: unknown }
  return typeof kind === 'string' && kind.endsWith('List') && Array.isArray(items)
}

/** `Service default/reviews`, from whatever the document holds, for error messages. */
export function describe(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return undefined
  const { kind, metadata } = value as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } }
  const name = typeof metadata?.name === 'string' ? metadata.name : undefined
  const namespace = typeof metadata?.namespace === 'string' ? metadata.namespace : undefined
  const kindText = typeof kind === 'string' ? kind : kind === undefined || kind === null ? undefined : show(kind)
  if (kindText === undefined && name === undefined) return undefined
  const nameText = name === undefined ? '(no name)' : kind === 'Node' ? name : `${namespace ?? 'default'}/${name}`
  return `${kindText ?? '(no kind)'} ${nameText}`
}

/** The line of the node at `path`, or of its nearest ancestor that exists in the document. */
function lineOf(doc: Document, lineCounter: LineCounter, path: readonly PathSegment[]): number | undefined {
  for (let length = path.length; length >= 0; length--) {
    const node = length === 0 ? doc.contents : doc.getIn(path.slice(0, length), true)
    // A map's range can start at a comment above it; its first key is where a reader looks.
    const first = isMap(node) ? node.items[0]?.key : undefined
    const located = isScalar(first) || isMap(first) || isSeq(first) ? first : node
    if (located && (isMap(located) || isSeq(located) || isScalar(located)) && located.range) {
      return lineCounter.linePos(located.range[0]).line
    }
  }
  return undefined
}

