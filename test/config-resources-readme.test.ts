// The examples in src/config/resources/README.md are valid resources: a reader can copy them.
import { readFileSync } from 'node:fs'
import t from 'tap'

import { parseResourceDocuments } from '../src/config/resources/index.ts'

const readme = readFileSync(new URL('../src/config/resources/README.md', import.meta.url), 'utf8')
const examples = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)].map((match) => match[1] ?? '')

t.test('every YAML example in the README parses without errors', async (t) => {
  t.ok(examples.length >= 8, 'one example per kind at least')
  for (const example of examples) {
    const { resources, errors } = parseResourceDocuments(example, 'README.md')
    t.same(errors.map(String), [], resources[0] ? `${resources[0].kind} example` : 'example')
    t.equal(resources.length, 1)
  }
})
