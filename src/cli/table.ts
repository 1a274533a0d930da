// The column layout of every table the CLI prints (`weft get`, `weft status`, `weft lab ls`):
// a header row, columns padded to their widest cell, three spaces apart, no trailing spaces.

export function renderTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((header, i) => Math.max(header.length, ...rows.map((row) => (row[i] ?? '').length)))
  const line = (cells: string[]): string => cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('   ').trimEnd()
  return [line(headers), ...rows.map(line)].join('\n')
}
