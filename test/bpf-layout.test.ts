// The map layouts in src/bpf/layout.ts against the compiled object's BTF (what clang made of
// bpf/weft_maps.h) and against the kernel's view of the loaded maps, plus the codecs.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'

import { defaultObjectPath, findCgroup2Mount, isOnBpfFs, parseIpv4Cidr } from '../src/bpf/index.ts'
import { counterIndex, mapPrograms, maps, programs, structs, type FieldType, type MapLayout } from '../src/bpf/layout.ts'
import { native } from '../src/bpf/native.ts'
import { requirePrivileged } from './helpers/privileged.ts'

interface BtfType {
  id: number
  kind: string
  name: string
  size?: number
  type_id?: number
  members?: { name: string; type_id: number; bits_offset: number }[]
}

function loadBtf(objectPath: string): Map<number, BtfType> {
  const json = JSON.parse(execFileSync('bpftool', ['btf', 'dump', 'file', objectPath, 'format', 'raw', '-j'], { encoding: 'utf8' })) as { types: BtfType[] }
  return new Map(json.types.map((type) => [type.id, type]))
}

/** Follows typedefs and qualifiers to the type that has a size. */
function resolve(btf: Map<number, BtfType>, id: number): BtfType {
  let type = btf.get(id)
  while (type && ['TYPEDEF', 'CONST', 'VOLATILE', 'RESTRICT'].includes(type.kind)) type = btf.get(type.type_id ?? -1)
  if (!type) throw new Error(`BTF type ${id} not found`)
  return type
}

t.test('every map in layout.ts matches its BTF definition in the object: key/value type, size and member offsets', (t) => {
  if (!requirePrivileged(t, ['bpf-object'])) return
  const btf = loadBtf(defaultObjectPath)
  const variables = new Map([...btf.values()].filter((type) => type.kind === 'VAR').map((type) => [type.name, type]))

  const checkField = (mapName: string, role: 'key' | 'value', expected: FieldType, definition: BtfType): void => {
    const member = definition.members?.find((m) => m.name === role)
    if (!member) return void t.fail(`${mapName}: BTF map definition has no ${role}`)
    const pointer = btf.get(member.type_id)
    t.equal(pointer?.kind, 'PTR', `${mapName}.${role} is declared with __type()`)
    const actual = resolve(btf, pointer?.type_id ?? -1)
    if ('struct' in expected) {
      const layout = structs[expected.struct]
      t.equal(actual.kind, 'STRUCT', `${mapName}.${role} is a struct`)
      t.equal(actual.name, layout.cName, `${mapName}.${role} is struct ${layout.cName}`)
      t.equal(actual.size, layout.size, `struct ${layout.cName} size`)
      const btfMembers = Object.fromEntries((actual.members ?? []).map((m) => [m.name, { offset: m.bits_offset / 8, size: resolve(btf, m.type_id).size }]))
      t.same(btfMembers, layout.fields, `struct ${layout.cName} members, offsets and sizes`)
    } else {
      t.equal(actual.kind, 'INT', `${mapName}.${role} is an integer`)
      t.equal(actual.size, expected.int, `${mapName}.${role} is ${expected.int} bytes`)
    }
  }

  for (const layout of Object.values(maps) as MapLayout<unknown, unknown>[]) {
    const variable = variables.get(layout.name)
    if (!variable) {
      t.fail(`map ${layout.name} from layout.ts is not in ${defaultObjectPath}`)
      continue
    }
    const definition = resolve(btf, variable.type_id ?? -1)
    checkField(layout.name, 'key', layout.key, definition)
    checkField(layout.name, 'value', layout.value, definition)
  }
  const declared = new Set(Object.values(maps).map((layout) => layout.name))
  const inObject = [...variables.keys()].filter((name) => name !== 'LICENSE')
  t.same(inObject.filter((name) => !declared.has(name)), [], 'every map in the object is declared in layout.ts')
  t.end()
})

t.test('the kernel agrees: loaded maps have the declared type, key size and value size', (t) => {
  if (!requirePrivileged(t, ['root', 'addon', 'bpf-object'])) return
  const object = native.openAndLoadObject(defaultObjectPath)
  t.teardown(() => {
    for (const fd of [...Object.values(object.programs), ...Object.values(object.maps)]) native.close(fd)
  })
  for (const layout of Object.values(maps) as MapLayout<unknown, unknown>[]) {
    const fd = object.maps[layout.name]
    if (fd === undefined) {
      t.fail(`no map ${layout.name}`)
      continue
    }
    const info = native.mapInfo(fd)
    t.same({ name: info.name, type: info.type, keySize: info.keySize, valueSize: info.valueSize }, { name: layout.name, type: layout.type, keySize: layout.keySize, valueSize: layout.valueSize })
  }
  t.end()
})

t.test('every program in layout.ts is in the object, and nothing else; counters fit the counters map', (t) => {
  if (!requirePrivileged(t, ['root', 'addon', 'bpf-object'])) return
  const object = native.openAndLoadObject(defaultObjectPath)
  t.teardown(() => {
    for (const fd of [...Object.values(object.programs), ...Object.values(object.maps)]) native.close(fd)
  })
  t.same(Object.keys(object.programs).sort(), [...Object.values(programs), ...Object.values(mapPrograms)].map((program) => program.cName).sort())
  const expectedTypes: Record<string, string> = { connect4: 'cgroup_sock_addr', connect6: 'cgroup_sock_addr', getpeername4: 'cgroup_sock_addr', getpeername6: 'cgroup_sock_addr', sockops: 'sock_ops', ingress: 'cgroup_skb', stream_verdict: 'sk_skb' }
  for (const [point, program] of [...Object.entries(programs), ...Object.entries(mapPrograms)]) {
    const fd = object.programs[program.cName]
    if (fd === undefined) continue
    t.equal(native.progInfo(fd).type, expectedTypes[point], `${program.cName} is a ${expectedTypes[point]} program`)
  }
  const countersFd = object.maps[maps.counters.name]!
  t.ok(Math.max(...Object.values(counterIndex)) < native.mapInfo(countersFd).maxEntries, 'every counter index is inside the counters array')
  t.end()
})

t.test('the addon refuses keys and values whose size is not the map\'s (no read or write past a buffer)', (t) => {
  if (!requirePrivileged(t, ['root', 'addon', 'bpf-object'])) return
  const object = native.openAndLoadObject(defaultObjectPath)
  t.teardown(() => {
    for (const fd of [...Object.values(object.programs), ...Object.values(object.maps)]) native.close(fd)
  })
  const layout = maps.dstByTuple
  const fd = object.maps[layout.name]!
  const key = Buffer.alloc(layout.keySize)
  const value = Buffer.alloc(layout.valueSize)
  t.throws(() => native.mapLookup(fd, key, layout.valueSize - 4), new RegExp(`mapLookup: value is ${layout.valueSize - 4} bytes, map fd ${fd} has ${layout.valueSize}-byte values`))
  t.throws(() => native.mapLookupAndDelete(fd, Buffer.alloc(2), layout.valueSize), /mapLookupAndDelete: key is 2 bytes/)
  t.throws(() => native.mapUpdate(fd, key, Buffer.alloc(1)), /mapUpdate: value is 1 bytes/)
  t.throws(() => native.mapUpdate(fd, Buffer.alloc(1), value), /mapUpdate: key is 1 bytes/)
  t.throws(() => native.mapDelete(fd, Buffer.alloc(layout.keySize + 1)), /mapDelete: key is/)
  t.throws(() => native.mapKeys(fd, 3), /mapKeys: key is 3 bytes/)
  native.mapUpdate(fd, key, value)
  t.same(native.mapLookup(fd, key, layout.valueSize), value, 'the right sizes work')
  t.equal(native.mapDelete(fd, key), true)
  t.end()
})

t.test('codecs: network order for addresses and ports, host order for excluded ports and ids', (t) => {
  t.same([...maps.interceptRules.encodeKey({ prefixLength: 24, ip: '198.18.9.0' })], [24, 0, 0, 0, 198, 18, 9, 0])
  t.same([...maps.dstByTuple.encodeKey({ ip: '::ffff:10.0.0.1', port: 0x1234 })], [10, 0, 0, 1, 0x12, 0x34, 0, 0], 'IPv4-mapped peers are accepted')
  t.same([...maps.excludedPorts.encodeKey(0x1f90)], [0x90, 0x1f], 'excluded port: host order (x86)')
  const original = { ip: '198.18.7.7', port: 80, sourceCgroupId: 12345n }
  t.same(maps.dstByTuple.decodeValue(maps.dstByTuple.encodeValue(original)), original)
  t.same(maps.proxyConfig.decodeValue(maps.proxyConfig.encodeValue({ ip: '127.0.0.1', port: 15001 })), { ip: '127.0.0.1', port: 15001 })
  t.throws(() => maps.dstByTuple.encodeKey({ ip: '10.0.0.256', port: 1 }), /not an IPv4 address/)
  t.same([...maps.meshSources.encodeKey('198.18.1.1')], [198, 18, 1, 1], 'mesh source: network order')
  t.equal(maps.meshSources.decodeKey(maps.meshSources.encodeKey('::ffff:198.18.0.2')), '198.18.0.2')
  t.same([...maps.strictCgroups.encodeKey(0x0102n)], [2, 1, 0, 0, 0, 0, 0, 0], 'cgroup id: host order')
  t.end()
})

t.test('parseIpv4Cidr normalises host bits and rejects malformed input', (t) => {
  t.same(parseIpv4Cidr('10.1.2.3/8'), { prefixLength: 8, ip: '10.0.0.0' })
  t.same(parseIpv4Cidr('10.1.2.3'), { prefixLength: 32, ip: '10.1.2.3' })
  t.same(parseIpv4Cidr('0.0.0.0/0'), { prefixLength: 0, ip: '0.0.0.0' })
  t.same(parseIpv4Cidr(' 198.19.255.255/16 '), { prefixLength: 16, ip: '198.19.0.0' }, 'surrounding spaces are trimmed')
  t.same(parseIpv4Cidr('255.255.255.255/31'), { prefixLength: 31, ip: '255.255.255.254' }, 'the top bit survives the mask')
  t.same(maps.interceptRules.decodeKey(maps.interceptRules.encodeKey(parseIpv4Cidr('10.96.3.4/12'))), { prefixLength: 12, ip: '10.96.0.0' })
  for (const bad of ['10.0.0.0/33', '10.0.0.0/', '10.0.0/8', 'fd00::/8', '10.0.0.0/8/1', '10.0.0.0/x', '10.0.0.0/+8', '10.0.0.256/8', '', '/8']) {
    t.throws(() => parseIpv4Cidr(bad), /not an IPv4 CIDR/, bad)
  }
  t.end()
})

t.test('findCgroup2Mount reads mountinfo (hybrid layout, escaped paths); isOnBpfFs walks up to an existing parent', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-mountinfo-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const mountinfo = join(dir, 'mountinfo')
  writeFileSync(
    mountinfo,
    [
      '25 1 0:23 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755',
      '26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw',
      '27 25 0:25 / /sys/fs/cgroup/memory rw shared:11 - cgroup cgroup rw,memory',
      '',
    ].join('\n'),
  )
  t.equal(findCgroup2Mount(mountinfo), '/sys/fs/cgroup/unified')
  writeFileSync(mountinfo, '26 25 0:24 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n')
  t.equal(findCgroup2Mount(mountinfo), '/mnt/my cgroups')
  writeFileSync(mountinfo, '25 1 0:23 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n')
  t.equal(findCgroup2Mount(mountinfo), undefined)
  t.equal(isOnBpfFs(join(dir, 'not/yet/there')), false, 'tmp is not bpffs')
  t.end()
})

t.test('a pin dir not created yet counts as on bpffs when its parent is', async (t) => {
  if (!requirePrivileged(t, ['bpffs'])) return
  t.equal(isOnBpfFs('/sys/fs/bpf/weft/not-yet-created/node'), true)
})
