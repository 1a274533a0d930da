// NodeInterception against the real kernel: load, pin, attach, adopt, enrollment, the
// redirect itself (connect4/connect6 + sockops + getpeername4/getpeername6), native IPv6
// refused, what is left alone, the strict-mode maps, counters, and uninstall (the stream verdict of
// the L4 fast path is pinned and adopted with the rest). Each test makes its own cgroups and pins and removes them on teardown.
import { existsSync, readdirSync } from 'node:fs'
import { createServer, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import t, { type Test } from 'tap'

import { BpfError, NodeInterception, cgroupIdOf, interceptionPrerequisites, socketCookie, socketFd, type InterceptionSettings } from '../src/bpf/index.ts'
import { native } from '../src/bpf/native.ts'
import {
  attachedPrograms,
  cgroupFixture,
  repoRoot,
  ensureLabUnreachableRoute,
  requirePrivileged,
  runInCgroup,
  tcpClientScript,
  type CgroupFixture,
} from './helpers/privileged.ts'

const settings = (proxyPort: number): InterceptionSettings => ({
  proxyIp: '127.0.0.1',
  proxyPort,
  interceptCidrs: ['198.18.0.0/15'],
  bypassCidrs: ['198.18.9.0/24'],
  excludedPorts: [8080],
})

function openIn(t: Test, fixture: CgroupFixture, proxyPort: number): NodeInterception {
  const interception = NodeInterception.open({ pinDir: fixture.pinDir, cgroupRoot: fixture.node, ...settings(proxyPort) })
  t.teardown(() => interception.close())
  return interception
}

interface Accepted { peerIp: string; peerPort: number; socket: Socket }

/** A stand-in for the daemon's outbound listener: records every accepted connection. */
async function fakeProxy(t: Test): Promise<{ server: Server; port: number; accepted: Accepted[]; onAccept: (handler: (accepted: Accepted) => void) => void }> {
  const accepted: Accepted[] = []
  let handler: (accepted: Accepted) => void = (connection) => connection.socket.end()
  const server = createServer((socket) => {
    const connection = { peerIp: socket.remoteAddress ?? '', peerPort: socket.remotePort ?? 0, socket }
    accepted.push(connection)
    handler(connection)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('fake proxy: no address')
  return { server, port: address.port, accepted, onAccept: (next) => (handler = next) }
}

/** Entries in a pinned map, read straight from bpffs (what the programs see). */
function pinnedMapSize(fixture: CgroupFixture, name: string, keySize: number): number {
  const fd = native.objGet(join(fixture.pinDir, 'maps', name))
  try {
    return native.mapKeys(fd, keySize).length
  } finally {
    native.close(fd)
  }
}

async function eventually(check: () => boolean, timeoutMs = 2000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) return false
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return true
}

type ClientResult = { remoteAddress?: string; remotePort?: number; localAddress?: string; localPort?: number; error?: string }

async function connectFrom(t: Test, cgroupDir: string, host: string, port: number): Promise<ClientResult> {
  const result = await runInCgroup(t, cgroupDir, tcpClientScript, [host, String(port)])
  const line = result.stdout.trim().split('\n')[0] ?? ''
  if (line === '') throw new Error(`client printed nothing (exit ${result.code}); stderr: ${result.stderr}`)
  return JSON.parse(line) as ClientResult
}

const allLinks = ['connect4', 'connect6', 'getpeername4', 'getpeername6', 'ingress', 'sockops']
const allMaps = ['counters', 'dst_by_cookie', 'dst_by_tuple', 'enrolled_cgrps', 'excluded_ports', 'intercept_rules', 'mesh_sources', 'proxy_config', 'splice_bytes', 'splice_peers', 'splice_socks', 'strict_cgrps']
/** Pinned under progs/: the cgroup programs, and the stream verdict (attached to splice_socks, not a cgroup). */
const allPrograms = [...allLinks, 'stream_verdict'].sort()

/** bpftool's attach type names for each attach point, with the program id. */
function expectedAttachments(ids: Record<string, number>): [string, number | undefined][] {
  return [
    ['cgroup_inet4_connect', ids.connect4],
    ['cgroup_inet6_connect', ids.connect6],
    ['cgroup_inet4_getpeername', ids.getpeername4],
    ['cgroup_inet6_getpeername', ids.getpeername6],
    ['cgroup_inet_ingress', ids.ingress],
    ['cgroup_sock_ops', ids.sockops],
  ].sort() as [string, number | undefined][]
}

t.test('loads, pins and attaches the six programs at the cgroup root', (t) => {
  if (!requirePrivileged(t)) return
  const fixture = cgroupFixture(t)
  const interception = openIn(t, fixture, 15001)
  t.equal(interception.adopted, false, 'a fresh install is not adopted')
  for (const sub of ['maps', 'progs', 'links']) t.ok(existsSync(join(fixture.pinDir, sub)), `pinned ${sub}/`)
  t.same(readdirSync(join(fixture.pinDir, 'links')).sort(), allLinks)
  t.same(readdirSync(join(fixture.pinDir, 'progs')).sort(), allPrograms)
  t.same(readdirSync(join(fixture.pinDir, 'maps')).sort(), allMaps)
  const ids = interception.programIds()
  const attached = attachedPrograms(fixture.node)
  t.same(
    attached.map((program) => [program.attach_type, program.id]).sort(),
    expectedAttachments(ids),
    'bpftool sees exactly our programs attached at the node cgroup',
  )
  t.end()
})

t.test('a second open adopts the pinned install: same programs, no reload, no second attach', (t) => {
  if (!requirePrivileged(t)) return
  const fixture = cgroupFixture(t)
  const first = openIn(t, fixture, 15001)
  const firstIds = first.programIds()
  first.setEnrolledCgroups([7n])
  first.setStrictCgroups([8n])
  first.setMeshSources(['198.18.1.1'])
  first.close()

  const second = openIn(t, fixture, 15002)
  t.equal(second.adopted, true)
  t.same(second.updatedPrograms, [], 'same object: nothing swapped')
  t.same(second.programIds(), firstIds, 'the same kernel programs, all six')
  t.same(second.enrolledCgroups(), [7n], 'map contents survive the restart')
  t.same(second.strictCgroups(), [8n], 'strict set too')
  t.same(second.meshSources(), ['198.18.1.1'], 'mesh sources too')
  t.same(attachedPrograms(fixture.node).map((program) => [program.attach_type, program.id]).sort(), expectedAttachments(firstIds), 'still attached once each')
  t.end()
})

t.test('adopting with a changed object swaps the changed program in place and keeps maps and links', async (t) => {
  if (!requirePrivileged(t)) return
  ensureLabUnreachableRoute()
  const { mkdtempSync, rmSync } = await import('node:fs')
  const { execFileSync } = await import('node:child_process')
  const { tmpdir } = await import('node:os')
  const dir = mkdtempSync(join(tmpdir(), 'weft-variant-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // The same source with a different ancestry bound: only the programs that walk a cgroup
  // ancestry change (connect4, connect6 and strict ingress).
  const variant = join(dir, 'weft.bpf.o')
  execFileSync('clang', ['-O2', '-g', '-Wall', '-Werror', '-target', 'bpf', '-D__TARGET_ARCH_x86', '-DWEFT_MAX_CGROUP_LEVELS=12',
    '-I', join(repoRoot, 'build/bpf'), '-I', join(repoRoot, 'bpf'), '-c', join(repoRoot, 'bpf/weft.bpf.c'), '-o', variant])

  const fixture = cgroupFixture(t)
  const pod = fixture.pod('pod')
  const proxy = await fakeProxy(t)
  const first = openIn(t, fixture, proxy.port)
  first.setEnrolledCgroups([cgroupIdOf(pod)])
  const before = first.programIds()
  const links = first.linkIds()
  first.close()

  const upgraded = NodeInterception.open({ pinDir: fixture.pinDir, cgroupRoot: fixture.node, objectPath: variant, ...settings(proxy.port) })
  t.teardown(() => upgraded.close())
  t.equal(upgraded.adopted, true)
  t.same(upgraded.updatedPrograms, ['connect4', 'connect6', 'ingress'])
  const after = upgraded.programIds()
  t.not(after.connect4, before.connect4, 'connect4 is a new program')
  t.not(after.connect6, before.connect6, 'connect6 is a new program')
  t.not(after.ingress, before.ingress, 'strict ingress is a new program')
  t.same(
    { sockops: after.sockops, getpeername4: after.getpeername4, getpeername6: after.getpeername6 },
    { sockops: before.sockops, getpeername4: before.getpeername4, getpeername6: before.getpeername6 },
    'unchanged programs stay',
  )
  t.same(upgraded.linkIds(), links, 'the same links')
  const { stream_verdict: streamVerdict, ...cgroupPrograms } = after
  t.equal(streamVerdict, before.stream_verdict, 'the stream verdict did not change, so it stays')
  t.same(attachedPrograms(fixture.node).map((program) => program.id).sort(), Object.values(cgroupPrograms).sort(), 'attached: exactly the current programs')
  t.same(upgraded.enrolledCgroups(), [cgroupIdOf(pod)], 'maps kept')
  t.equal((await connectFrom(t, pod, '198.18.7.7', 80)).remoteAddress, '198.18.7.7', 'the new connect4 redirects through the pinned maps')
  t.end()
})

t.test('adopting an install attached to another cgroup root is refused with a clear error', (t) => {
  if (!requirePrivileged(t)) return
  const fixture = cgroupFixture(t)
  openIn(t, fixture, 15001).close()
  const elsewhere = fixture.pod('elsewhere')
  t.throws(
    () => NodeInterception.open({ pinDir: fixture.pinDir, cgroupRoot: elsewhere, ...settings(15001) }),
    { name: 'BpfError', message: /attached to cgroup id .* not .*elsewhere.*uninstall/ },
  )
  t.end()
})

t.test('a partial install (a link pin missing, maps and programs still pinned) is removed and installed afresh', async (t) => {
  if (!requirePrivileged(t)) return
  ensureLabUnreachableRoute()
  const { unlinkSync } = await import('node:fs')
  const fixture = cgroupFixture(t) // its teardown detaches and unpins whatever is left, and removes the cgroups
  const pod = fixture.pod('pod')
  const proxy = await fakeProxy(t)
  const first = openIn(t, fixture, proxy.port)
  first.setEnrolledCgroups([7n])
  const before = { programs: first.programIds(), maps: first.mapIds(), links: first.linkIds() }
  first.close()

  // What a crash between pinning the links would leave: every map and program pinned, one
  // link pin missing. With no fd and no pin left, the kernel releases that link (detaches it).
  unlinkSync(join(fixture.pinDir, 'links', 'sockops'))
  t.same(readdirSync(join(fixture.pinDir, 'links')).sort(), allLinks.filter((point) => point !== 'sockops'), 'setup: one link pin gone')
  t.equal(readdirSync(join(fixture.pinDir, 'maps')).length, allMaps.length, 'setup: maps still pinned')
  t.same(readdirSync(join(fixture.pinDir, 'progs')).sort(), allPrograms, 'setup: programs still pinned')
  t.ok(
    await eventually(() => !attachedPrograms(fixture.node).some((program) => program.attach_type === 'cgroup_sock_ops') && attachedPrograms(fixture.node).length === allLinks.length - 1),
    'setup: the unpinned link was released, the others are still attached',
  )

  const second = openIn(t, fixture, proxy.port)
  t.equal(second.adopted, false, 'not adopted: installed afresh')
  t.same(second.updatedPrograms, [])
  const after = { programs: second.programIds(), maps: second.mapIds(), links: second.linkIds() }
  for (const point of ['connect4', 'connect6', 'sockops', 'getpeername4', 'getpeername6', 'ingress'] as const) {
    t.not(after.programs[point], before.programs[point], `${point}: a newly loaded program`)
    t.not(after.links[point], before.links[point], `${point}: a new link`)
  }
  t.not(after.maps.enrolledCgroups, before.maps.enrolledCgroups, 'new maps, not the pinned ones')
  t.same(second.enrolledCgroups(), [], 'the old maps\' contents are gone with them')
  t.same(readdirSync(join(fixture.pinDir, 'links')).sort(), allLinks, 'every link pinned again')
  t.same(
    attachedPrograms(fixture.node).map((program) => [program.attach_type, program.id]).sort(),
    expectedAttachments(after.programs),
    'attached: exactly the new programs, once each (the old links that survived were detached)',
  )

  second.setEnrolledCgroups([cgroupIdOf(pod)])
  const client = await connectFrom(t, pod, '198.18.7.7', 80)
  t.same({ address: client.remoteAddress, port: client.remotePort }, { address: '198.18.7.7', port: 80 }, 'redirected, and getpeername shows the original peer')
  t.equal(proxy.accepted.length, 1, 'the proxy accepted the connection')
  t.same(second.takeOriginalDestination(proxy.accepted[0]?.peerIp ?? '', proxy.accepted[0]?.peerPort ?? 0), {
    ip: '198.18.7.7',
    port: 80,
    sourceCgroupId: cgroupIdOf(pod),
  }, 'sockops recorded the original destination (the hook whose link was missing)')
  t.end()
})

t.test('invalid settings are rejected before anything is loaded', (t) => {
  if (!requirePrivileged(t)) return
  const fixture = cgroupFixture(t)
  t.throws(() => NodeInterception.open({ pinDir: fixture.pinDir, cgroupRoot: fixture.node, ...settings(15001), interceptCidrs: ['10.0.0.0/33'] }), {
    message: /not an IPv4 CIDR: "10.0.0.0\/33"/,
  })
  t.throws(() => NodeInterception.open({ pinDir: fixture.pinDir, cgroupRoot: fixture.node, ...settings(15001), excludedPorts: [70000] }), {
    message: /not a port number: 70000/,
  })
  t.notOk(existsSync(fixture.pinDir), 'nothing pinned')
  t.same(attachedPrograms(fixture.node), [], 'nothing attached')
  t.end()
})

t.test('this host meets the prerequisites interception checks for', (t) => {
  if (!requirePrivileged(t)) return
  t.same(interceptionPrerequisites(), [])
  t.match(interceptionPrerequisites('/tmp'), [/no BPF filesystem at \/tmp/])
  t.end()
})

t.test('a missing cgroup root is refused with what to do', (t) => {
  if (!requirePrivileged(t)) return
  const fixture = cgroupFixture(t)
  t.throws(() => NodeInterception.open({ pinDir: fixture.pinDir, cgroupRoot: join(fixture.node, 'absent'), ...settings(15001) }), {
    name: 'BpfError',
    message: /cgroup root .*absent is not usable: .*create it first/,
  })
  t.notOk(existsSync(fixture.pinDir))
  t.end()
})

t.test('a pin dir outside bpffs is refused', (t) => {
  if (!requirePrivileged(t)) return
  const fixture = cgroupFixture(t)
  t.throws(() => NodeInterception.open({ pinDir: '/tmp/weft-not-bpffs/node', cgroupRoot: fixture.node, ...settings(15001) }), {
    name: 'BpfError',
    message: /not on a BPF filesystem/,
  })
  t.end()
})

t.test('setEnrolledCgroups makes the map equal to the given set', (t) => {
  if (!requirePrivileged(t)) return
  const fixture = cgroupFixture(t)
  const interception = openIn(t, fixture, 15001)
  interception.setEnrolledCgroups([1n, 2n, 3n])
  t.same(interception.enrolledCgroups().sort(), [1n, 2n, 3n])
  interception.setEnrolledCgroups(new Set([3n, 4n]))
  t.same(interception.enrolledCgroups().sort(), [3n, 4n], 'adds new, deletes stale')
  interception.setEnrolledCgroups([])
  t.same(interception.enrolledCgroups(), [])
  t.end()
})

t.test('an enrolled pod is redirected to the proxy; the proxy learns the original destination; the app sees it as its peer', async (t) => {
  if (!requirePrivileged(t)) return
  ensureLabUnreachableRoute()
  const fixture = cgroupFixture(t)
  const pod = fixture.pod('pod')
  const proxy = await fakeProxy(t)
  const interception = openIn(t, fixture, proxy.port)
  interception.setEnrolledCgroups([cgroupIdOf(pod)])

  const originals: ReturnType<NodeInterception['takeOriginalDestination']>[] = []
  const cookies: bigint[] = []
  proxy.onAccept((connection) => {
    originals.push(interception.takeOriginalDestination(connection.peerIp, connection.peerPort))
    originals.push(interception.takeOriginalDestination(connection.peerIp, connection.peerPort)) // taken once only
    const fd = socketFd(connection.socket)
    if (fd !== undefined) cookies.push(socketCookie(fd))
    connection.socket.end()
  })

  const client = await connectFrom(t, pod, '198.18.7.7', 80)
  t.equal(proxy.accepted.length, 1, 'the proxy accepted the connection')
  t.same(originals[0], { ip: '198.18.7.7', port: 80, sourceCgroupId: cgroupIdOf(pod) }, 'original destination by peer address')
  t.equal(originals[1], undefined, 'taking removes the entry')
  t.same({ address: client.remoteAddress, port: client.remotePort }, { address: '198.18.7.7', port: 80 }, 'getpeername shows the original peer')
  t.equal(client.localPort, proxy.accepted[0]?.peerPort, 'the proxy saw the pod socket as its peer')
  t.ok(cookies[0] !== undefined && cookies[0] > 0n, 'the accepted socket has a cookie')

  const counters = interception.counters()
  t.equal(counters.redirected, 1n)
  t.equal(counters.tupleRecorded, 1n)
  t.ok(counters.peerRestored >= 1n, 'getpeername4 restored the peer')
  t.ok(await eventually(() => pinnedMapSize(fixture, 'dst_by_cookie', 8) === 0), 'the cookie entry is gone once the socket closed')
  t.end()
})

t.test('an AF_INET6 socket connecting to an IPv4-mapped address is redirected like AF_INET: the proxy sees plain IPv4 and learns the original destination; getpeername shows ::ffff:<original>', async (t) => {
  if (!requirePrivileged(t)) return
  ensureLabUnreachableRoute()
  const fixture = cgroupFixture(t)
  const pod = fixture.pod('pod')
  const proxy = await fakeProxy(t)
  const interception = openIn(t, fixture, proxy.port)
  interception.setEnrolledCgroups([cgroupIdOf(pod)])
  const originals: ReturnType<NodeInterception['takeOriginalDestination']>[] = []
  proxy.onAccept((connection) => {
    originals.push(interception.takeOriginalDestination(connection.peerIp, connection.peerPort))
    connection.socket.end()
  })

  // Node opens an AF_INET6 socket for an IPv6 literal, as Java, .NET and gRPC's C core do.
  const client = await connectFrom(t, pod, '::ffff:198.18.7.7', 80)
  t.equal(proxy.accepted.length, 1, 'the proxy accepted the connection')
  t.equal(proxy.accepted[0]?.peerIp, '127.0.0.1', 'on the (IPv4) proxy listener the pod is a plain IPv4 peer')
  t.same(originals[0], { ip: '198.18.7.7', port: 80, sourceCgroupId: cgroupIdOf(pod) }, 'sockops keyed the original destination by the IPv4 tuple')
  t.same({ address: client.remoteAddress, port: client.remotePort }, { address: '::ffff:198.18.7.7', port: 80 }, 'getpeername6 shows the original peer, mapped')
  t.equal(client.localAddress, '::ffff:127.0.0.1', 'the pod socket stayed AF_INET6')
  const counters = interception.counters()
  t.equal(counters.redirected, 1n)
  t.equal(counters.tupleRecorded, 1n)
  t.ok(counters.peerRestored >= 1n)
  t.equal(counters.refusedIpv6, 0n)
  t.ok(await eventually(() => pinnedMapSize(fixture, 'dst_by_cookie', 8) === 0), 'the cookie entry is gone once the socket closed')
  t.end()
})

t.test('connect6 applies connect4\'s decision to mapped destinations: unenrolled, excluded port and bypass CIDR go their own way', async (t) => {
  if (!requirePrivileged(t)) return
  ensureLabUnreachableRoute() // a mapped 198.18.x connect that is left alone dies here, as an IPv4 one
  const fixture = cgroupFixture(t)
  const enrolled = fixture.pod('enrolled')
  const other = fixture.pod('other')
  const proxy = await fakeProxy(t)
  const interception = openIn(t, fixture, proxy.port)
  interception.setEnrolledCgroups([cgroupIdOf(enrolled)])

  t.equal((await connectFrom(t, other, '::ffff:198.18.7.7', 80)).error, 'EHOSTUNREACH', 'unenrolled: routed, not redirected')
  t.equal((await connectFrom(t, enrolled, '::ffff:198.18.7.7', 8080)).error, 'EHOSTUNREACH', 'excluded port')
  t.equal((await connectFrom(t, enrolled, '::ffff:198.18.9.9', 80)).error, 'EHOSTUNREACH', 'bypass CIDR')
  t.equal(proxy.accepted.length, 0, 'nothing reached the proxy')
  const counters = interception.counters()
  t.equal(counters.notEnrolled, 1n)
  t.equal(counters.bypassed, 2n)
  t.equal(counters.redirected, 0n)
  t.equal(counters.refusedIpv6, 0n, 'mapped destinations are never refused')
  t.end()
})

t.test('IPv6 loopback (::1) is left alone, for enrolled and unenrolled pods alike', async (t) => {
  if (!requirePrivileged(t)) return
  const fixture = cgroupFixture(t)
  const enrolled = fixture.pod('enrolled')
  const other = fixture.pod('other')
  const proxy = await fakeProxy(t)
  const server = createServer((socket) => socket.end())
  await new Promise<void>((resolve) => server.listen(0, '::1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const port = (server.address() as { port: number }).port
  const interception = openIn(t, fixture, proxy.port)
  interception.setEnrolledCgroups([cgroupIdOf(enrolled)])

  for (const pod of [enrolled, other]) {
    const client = await connectFrom(t, pod, '::1', port)
    t.same({ address: client.remoteAddress, port: client.remotePort }, { address: '::1', port }, `${pod.endsWith('other') ? 'unenrolled' : 'enrolled'}: reached the ::1 server itself`)
  }
  t.equal(proxy.accepted.length, 0)
  t.equal(interception.counters().refusedIpv6, 0n)
  t.end()
})

t.test('setStrictCgroups and setMeshSources make their maps equal to the given sets; a bad address changes nothing', (t) => {
  if (!requirePrivileged(t)) return
  const fixture = cgroupFixture(t)
  const interception = openIn(t, fixture, 15001)
  interception.setStrictCgroups([1n, 2n])
  t.same(interception.strictCgroups().sort(), [1n, 2n])
  interception.setStrictCgroups(new Set([2n, 3n]))
  t.same(interception.strictCgroups().sort(), [2n, 3n], 'adds new, deletes stale')
  interception.setMeshSources(['198.18.1.1', '198.18.0.2'])
  t.same(interception.meshSources().sort(), ['198.18.0.2', '198.18.1.1'])
  t.throws(() => interception.setMeshSources(['198.18.1.1', 'fd00::1']), /not an IPv4 address: "fd00::1"/)
  t.same(interception.meshSources().sort(), ['198.18.0.2', '198.18.1.1'], 'unchanged after the refused call')
  interception.setMeshSources(['::ffff:198.18.2.1'])
  t.same(interception.meshSources(), ['198.18.2.1'], 'a mapped address is stored as its IPv4')
  interception.setStrictCgroups([])
  t.same(interception.strictCgroups(), [])
  t.same(interception.enrolledCgroups(), [], 'the enrolled set is a different map')
  t.end()
})

t.test('while no proxy listens, an enrolled pod\'s connect is refused (fails closed) and leaves no entry behind', async (t) => {
  if (!requirePrivileged(t)) return
  ensureLabUnreachableRoute()
  const fixture = cgroupFixture(t)
  const pod = fixture.pod('pod')
  const proxy = await fakeProxy(t)
  const closedPort = proxy.port
  await new Promise<void>((resolve) => proxy.server.close(() => resolve()))
  const interception = openIn(t, fixture, closedPort)
  interception.setEnrolledCgroups([cgroupIdOf(pod)])

  t.equal((await connectFrom(t, pod, '198.18.7.7', 80)).error, 'ECONNREFUSED', 'refused by the proxy address, not routed around it')
  t.equal(interception.counters().redirected, 1n)
  t.equal(interception.counters().tupleRecorded, 0n)
  t.ok(await eventually(() => pinnedMapSize(fixture, 'dst_by_cookie', 8) === 0), 'the refused socket\'s cookie entry was removed')
  t.end()
})

t.test('a pod in a sibling cgroup that is not enrolled is left alone', async (t) => {
  if (!requirePrivileged(t)) return
  ensureLabUnreachableRoute()
  const fixture = cgroupFixture(t)
  const enrolled = fixture.pod('enrolled')
  const other = fixture.pod('other')
  const proxy = await fakeProxy(t)
  const interception = openIn(t, fixture, proxy.port)
  interception.setEnrolledCgroups([cgroupIdOf(enrolled)])

  const client = await connectFrom(t, other, '198.18.7.7', 80)
  t.equal(client.error, 'EHOSTUNREACH', 'the connect went to the (unreachable) real destination')
  t.equal(proxy.accepted.length, 0, 'nothing reached the proxy')
  t.equal(interception.counters().notEnrolled, 1n)
  t.equal(interception.counters().redirected, 0n)
  t.end()
})

t.test('enrollment of an ancestor cgroup covers the cgroups below it', async (t) => {
  if (!requirePrivileged(t)) return
  ensureLabUnreachableRoute()
  const fixture = cgroupFixture(t)
  const pod = fixture.pod('pod')
  const container = fixture.pod('pod/container')
  const proxy = await fakeProxy(t)
  const interception = openIn(t, fixture, proxy.port)
  interception.setEnrolledCgroups([cgroupIdOf(pod)])

  const client = await connectFrom(t, container, '198.18.7.7', 80)
  t.equal(client.remoteAddress, '198.18.7.7')
  t.equal(proxy.accepted.length, 1)
  t.same(interception.takeOriginalDestination(proxy.accepted[0]?.peerIp ?? '', proxy.accepted[0]?.peerPort ?? 0), {
    ip: '198.18.7.7',
    port: 80,
    sourceCgroupId: cgroupIdOf(container),
  })
  t.end()
})

t.test('excluded ports, bypass CIDRs and destinations outside the intercept ranges are not redirected', async (t) => {
  if (!requirePrivileged(t)) return
  ensureLabUnreachableRoute()
  const fixture = cgroupFixture(t)
  const pod = fixture.pod('pod')
  const proxy = await fakeProxy(t)
  const interception = NodeInterception.open({
    pinDir: fixture.pinDir,
    cgroupRoot: fixture.node,
    ...settings(proxy.port),
    interceptCidrs: ['198.18.0.0/16'], // 198.19.x is outside
  })
  t.teardown(() => interception.close())
  interception.setEnrolledCgroups([cgroupIdOf(pod)])

  t.equal((await connectFrom(t, pod, '198.18.7.7', 8080)).error, 'EHOSTUNREACH', 'excluded port')
  t.equal((await connectFrom(t, pod, '198.18.9.9', 80)).error, 'EHOSTUNREACH', 'bypass CIDR inside the intercept range')
  t.equal((await connectFrom(t, pod, '198.19.1.1', 80)).error, 'EHOSTUNREACH', 'outside every intercept range')
  t.equal(proxy.accepted.length, 0)
  t.equal(interception.counters().bypassed, 2n, 'port and CIDR bypasses are counted; out-of-range is not')

  interception.applySettings({ ...settings(proxy.port), excludedPorts: [], bypassCidrs: [] })
  t.equal((await connectFrom(t, pod, '198.18.9.9', 8080)).remoteAddress, '198.18.9.9', 'after applySettings the hole is gone')
  t.equal(proxy.accepted.length, 1)
  t.end()
})

t.test('a connect to the proxy itself is not rewritten', async (t) => {
  if (!requirePrivileged(t)) return
  const fixture = cgroupFixture(t)
  const pod = fixture.pod('pod')
  const proxy = await fakeProxy(t)
  const interception = NodeInterception.open({ pinDir: fixture.pinDir, cgroupRoot: fixture.node, ...settings(proxy.port), interceptCidrs: ['127.0.0.0/8'] })
  t.teardown(() => interception.close())
  interception.setEnrolledCgroups([cgroupIdOf(pod)])
  const client = await connectFrom(t, pod, '127.0.0.1', proxy.port)
  t.equal(client.remotePort, proxy.port)
  t.equal(interception.counters().proxySelf, 1n)
  t.equal(interception.counters().redirected, 0n)
  t.end()
})

t.test('uninstall detaches and unpins: interception stops', async (t) => {
  if (!requirePrivileged(t)) return
  ensureLabUnreachableRoute()
  const fixture = cgroupFixture(t)
  const pod = fixture.pod('pod')
  const proxy = await fakeProxy(t)
  const interception = openIn(t, fixture, proxy.port)
  interception.setEnrolledCgroups([cgroupIdOf(pod)])
  t.equal((await connectFrom(t, pod, '198.18.7.7', 80)).remoteAddress, '198.18.7.7', 'redirected while installed')

  NodeInterception.uninstall(fixture.pinDir)
  t.notOk(existsSync(fixture.pinDir), 'pin dir removed')
  t.same(attachedPrograms(fixture.node), [], 'nothing attached, even though this process still holds map fds')
  t.equal((await connectFrom(t, pod, '198.18.7.7', 80)).error, 'EHOSTUNREACH', 'no longer redirected')
  t.equal(proxy.accepted.length, 1)
  t.doesNotThrow(() => NodeInterception.uninstall(fixture.pinDir), 'uninstalling again is a no-op')
  t.end()
})

t.test('a program the verifier rejects fails with errno, libbpf output and the verifier log', async (t) => {
  if (!requirePrivileged(t)) return
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs')
  const { execFileSync } = await import('node:child_process')
  const { tmpdir } = await import('node:os')
  const dir = mkdtempSync(join(tmpdir(), 'weft-bad-bpf-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // Reads past the end of the context: the verifier must refuse it.
  writeFileSync(
    join(dir, 'bad.bpf.c'),
    `#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
SEC("cgroup/connect4")
int bad_connect4(struct bpf_sock_addr *ctx) { return *(volatile __u32 *)((char *)ctx + 4000); }
char LICENSE[] SEC("license") = "GPL";
`,
  )
  execFileSync('clang', ['-O2', '-g', '-target', 'bpf', '-D__TARGET_ARCH_x86', '-I', join(repoRoot, 'build/bpf'), '-c', join(dir, 'bad.bpf.c'), '-o', join(dir, 'bad.bpf.o')])
  const fixture = cgroupFixture(t)
  let caught: unknown
  try {
    NodeInterception.open({ pinDir: fixture.pinDir, cgroupRoot: fixture.node, objectPath: join(dir, 'bad.bpf.o'), ...settings(15001) })
  } catch (error) {
    caught = error
  }
  t.type(caught, BpfError)
  const error = caught as BpfError
  t.equal(error.code, 'EACCES')
  t.equal(error.errno, 13)
  t.match(error.message, /bpf_object__load .*bad\.bpf\.o/)
  t.match(error.verifierLog ?? '', /invalid bpf_context access/, 'the verifier says why')
  t.notOk(existsSync(join(fixture.pinDir, 'links')), 'nothing pinned')
  t.end()
})
