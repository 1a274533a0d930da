// The table layout of `weft get`, `weft status` and `weft lab ls`.
import t from 'tap'

import { renderTable } from '../src/cli/table.ts'

t.test('columns are as wide as their widest cell, three spaces apart, with no trailing spaces', async (t) => {
  const text = renderTable(['NODE', 'ADDRESS', 'LABELS'], [['node1', '198.18.0.2', 'app=echo'], ['node10', '198.18.0.11', '']])
  t.equal(text, ['NODE     ADDRESS       LABELS', 'node1    198.18.0.2    app=echo', 'node10   198.18.0.11'].join('\n'))
})

t.test('a header wider than every cell sets the width; cells with one space stay one column', async (t) => {
  const text = renderTable(['POD RANGE', 'NAMESPACE'], [['198.18.1.0/24', 'weft-x-node1']])
  t.same(text.split('\n').map((line) => line.split(/\s{2,}/)), [['POD RANGE', 'NAMESPACE'], ['198.18.1.0/24', 'weft-x-node1']])
})

t.test('with no rows it is the header line alone', async (t) => {
  t.equal(renderTable(['KIND', 'NAME'], []), 'KIND   NAME')
})
