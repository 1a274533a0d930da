// The lab as its users see it: topology validation, what `up` builds, NATS and weft control in
// the lab, pods talking by pod IP, exec, `weft lab ls`, and `down` removing exactly its own run,
// also after a crash.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'

import { BusError, connectBus, readContext, resolveBusOptions, type Bus } from '../src/bus/index.ts'
import { requestRegister } from '../src/control/index.ts'
import { daemonCommand, LabBusyError, LabError, labDown, labResources, labUp, listLabs, openLab, parseTopology, planLab, topologyFromShorthand, type Lab } from '../src/lab/index.ts'
import { cgroup2, hostLinkExists, labLeftovers, labUpWhenFree, netnsList, requireLab, runLabCli, startIn, startLab, tcpClientScript, tcpServerScript, testRunId } from './helpers/lab.ts'
import { until } from './helpers/wait.ts'

// The lab records its context in the weft config file: keep this test's contexts out of the user's.
const configDir = mkdtempSync(join(tmpdir(), 'weft-lab-test-config-'))
process.env.WEFT_CONFIG = join(configDir, 'config.json')
t.teardown(() => rmSync(configDir, { recursive: true, force: true }))

const topologyYaml = `nodes: [node1, node2]
pods:
  - {name: client, node: node1}
  - {name: echo-a, node: node1, labels: {app: echo}}
  - {name: echo-b, node: node2, labels: {app: echo}}
  - {name: outsider, node: node1, enrolled: false}
`

t.test('topology files are validated, each problem in one line naming file, line and entry', async (t) => {
  const topology = parseTopology(topologyYaml, 'lab.yaml')
  t.same(topology.nodes, ['node1', 'node2'])
  t.same(topology.pods.map((p) => [p.name, p.node, p.enrolled, p.labels]), [
    ['client', 'node1', true, {}],
    ['echo-a', 'node1', true, { app: 'echo' }],
    ['echo-b', 'node2', true, { app: 'echo' }],
    ['outsider', 'node1', false, {}],
  ])
  t.same(parseTopology('{"nodes": ["n1"], "pods": [{"name": "p", "node": "n1"}]}', 'lab.json').pods[0]?.node, 'n1', 'JSON works too')
  t.same(topology.pods.map((p) => p.serviceAccount), ['default', 'default', 'default', 'default'], 'service account defaults to "default"')
  t.equal(parseTopology('nodes: [node1]\npods:\n  - {name: web, node: node1, namespace: shop, serviceAccount: web-sa}\n', 'lab.yaml').pods[0]?.serviceAccount, 'web-sa', 'serviceAccount per pod')

  const cases: [string, string, RegExp][] = [
    ['unknown node', 'nodes: [node1]\npods:\n  - {name: a, node: node9}\n', /^lab\.yaml:3: pods\[0\] \(a\): unknown node "node9" \(nodes: node1\)$/],
    ['duplicate pod', 'nodes: [node1]\npods:\n  - {name: a, node: node1}\n  - {name: a, node: node1}\n', /^lab\.yaml:4: pods\[1\] \(a\): duplicate pod "a"/],
    ['bad pod name', 'nodes: [node1]\npods:\n  - {name: Client_1, node: node1}\n', /^lab\.yaml:3: pods\[0\] \(Client_1\): name: bad name "Client_1"/],
    ['bad node name', 'nodes: [node1, 9lives]\n', /^lab\.yaml:1: nodes\[1\]: bad name "9lives"/],
    ['name too long', 'nodes: [node1]\npods:\n  - {name: a-very-long-pod-name, node: node1}\n', /bad name "a-very-long-pod-name"/],
    ['unknown pod key', 'nodes: [node1]\npods:\n  - name: a\n    node: node1\n    lables: {app: x}\n', /^lab\.yaml:5: pods\[0\] \(a\): unknown key "lables"/],
    ['unknown top key', 'nodes: [node1]\nservices: []\n', /^lab\.yaml:2: unknown key "services" \(allowed: nodes, pods, kubeletCgroups\)$/],
    ['bad kubelet driver', 'nodes: [node1]\nkubeletCgroups: cgroupv1\n', /^lab\.yaml:2: kubeletCgroups must be systemd or cgroupfs \(the kubelet's cgroup driver; got string "cgroupv1"\)$/],
    ['bad QoS class', 'nodes: [node1]\npods:\n  - {name: a, node: node1, qosClass: Gold}\n', /^lab\.yaml:3: pods\[0\] \(a\): qosClass must be one of Guaranteed, Burstable, BestEffort \(got string "Gold"\)$/],
    ['pod named like a node', 'nodes: [node1]\npods:\n  - {name: node1, node: node1}\n', /already a node name/],
    ['reserved name', 'nodes: [ul]\n', /reserved for the underlay/],
    ['no nodes', 'pods: []\n', /^lab\.yaml:1: `nodes` must be a non-empty list/],
    ['bad service account', 'nodes: [node1]\npods:\n  - name: a\n    node: node1\n    serviceAccount: Web_SA\n', /^lab\.yaml:5: pods\[0\] \(a\): serviceAccount must be a Kubernetes service account name like "web" \(lowercase letters, digits and "-", at most 63; got string "Web_SA"\)$/],
    ['service account not a string', 'nodes: [node1]\npods:\n  - {name: a, node: node1, serviceAccount: 7}\n', /^lab\.yaml:3: pods\[0\] \(a\): serviceAccount must be .*got number 7\)$/],
    ['label not a string', 'nodes: [node1]\npods:\n  - {name: a, node: node1, labels: {v: 1}}\n', /label v must be a string/],
    ['malformed YAML', 'nodes: [node1\npods:\n  - {name: a\n', /^lab\.yaml:2:1: malformed topology/],
    ['malformed JSON', '{"nodes": ["node1"],, }', /^lab\.yaml:1:\d+: malformed topology/],
    ['empty file', '', /^lab\.yaml: topology is empty/],
  ]
  for (const [name, text, expected] of cases) {
    t.throws(() => parseTopology(text, 'lab.yaml'), expected, name)
    try {
      parseTopology(text, 'lab.yaml')
    } catch (error) {
      t.ok(error instanceof LabError && !error.message.includes('\n'), `${name}: one line, a LabError`)
    }
  }

  const withAccount = parseTopology('nodes: [node1]\npods:\n  - {name: web, node: node1, namespace: shop, serviceAccount: web-sa}\n', 'lab.yaml')
  const registered = labResources(planLab(withAccount, 'sa-test', '/sys/fs/cgroup')) as { kind: string; spec: { serviceAccountName?: string } }[]
  t.equal(registered.find((r) => r.kind === 'Pod')?.spec.serviceAccountName, 'web-sa', 'the registered Pod carries the service account')

  // The kubelet's layout: the pod's cgroup where the kubelet would put it, found by the daemon
  // from the UID and QoS class the registered Pod carries (no weft.dev/cgroup).
  const kubelet = planLab(parseTopology('nodes: [node1]\nkubeletCgroups: systemd\npods:\n  - {name: web, node: node1, qosClass: Burstable}\n', 'lab.yaml'), 'kubelet-test', '/sys/fs/cgroup')
  const web = kubelet.pods[0]!
  t.equal(kubelet.nodes[0]?.cgroupRoot, '/sys/fs/cgroup/weft-kubelet-test/nodes/node1/kubepods.slice')
  t.match(web.uid, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-8[0-9a-f]{3}-[0-9a-f]{12}$/)
  t.equal(web.cgroup, `/sys/fs/cgroup/weft-kubelet-test/nodes/node1/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${web.uid.replaceAll('-', '_')}.slice/${web.cgroup.split('/').pop()}`)
  t.match(web.cgroup, /\/cri-containerd-[0-9a-f]{64}\.scope$/)
  const kubeletPod = (labResources(kubelet) as Array<{ kind: string; metadata: { uid?: string; annotations?: Record<string, string> }; status: { qosClass?: string } }>).find((r) => r.kind === 'Pod')!
  t.same([kubeletPod.metadata.uid, kubeletPod.status.qosClass, kubeletPod.metadata.annotations?.['weft.dev/cgroup']], [web.uid, 'Burstable', undefined])

  const shorthand = topologyFromShorthand(2, 3)
  t.same(shorthand.nodes, ['node1', 'node2'])
  t.same(shorthand.pods.map((p) => `${p.name}@${p.node}`), ['node1-pod1@node1', 'node1-pod2@node1', 'node1-pod3@node1', 'node2-pod1@node2', 'node2-pod2@node2', 'node2-pod3@node2'])
  t.throws(() => topologyFromShorthand(0, 1), /--nodes must be a whole number from 1/)
})

const alive = (pid: number | undefined): boolean => {
  if (pid === undefined) return false
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

t.test('a lab of two nodes', async (t) => {
  if (!requireLab(t)) return
  const lab: Lab = await startLab(t, parseTopology(topologyYaml, 'lab.yaml'))
  const run = lab.runId

  await t.test('up builds the planned namespaces, addresses, cgroups and state', async (t) => {
    t.same(lab.nodes.map((n) => [n.name, n.address, n.proxyIp, n.podCidr, n.netns]), [
      ['node1', '198.18.0.2', '198.18.1.1', '198.18.1.0/24', `weft-${run}-node1`],
      ['node2', '198.18.0.3', '198.18.2.1', '198.18.2.0/24', `weft-${run}-node2`],
    ])
    t.same(lab.pods.map((p) => [p.name, p.node, p.ip]), [
      ['client', 'node1', '198.18.1.2'],
      ['echo-a', 'node1', '198.18.1.3'],
      ['echo-b', 'node2', '198.18.2.2'],
      ['outsider', 'node1', '198.18.1.4'],
    ])
    for (const name of ['ul', 'node1', 'node2', 'client', 'echo-a', 'echo-b', 'outsider']) t.ok(netnsList().includes(`weft-${run}-${name}`), `netns weft-${run}-${name}`)
    t.ok(hostLinkExists(`wh-${run}`), 'host link into the underlay')
    t.match(spawnSync('ip', ['route', 'show', 'exact', '198.18.0.0/15'], { encoding: 'utf8' }).stdout, /unreachable 198\.18\.0\.0\/15/, 'host keeps the unreachable route')
    const node1 = lab.node('node1')
    t.equal(node1.cgroupRoot, join(cgroup2(), `weft-${run}`, 'nodes', 'node1'))
    t.equal(lab.pod('client').cgroup, join(node1.cgroupRoot, 'client'))
    t.ok(existsSync(join(lab.pod('client').cgroup, 'cgroup.procs')), 'pod cgroup under the node workload root')
    t.ok(existsSync(join(node1.daemonCgroup, 'cgroup.procs')), 'daemon cgroup outside the workload root')
    t.equal(node1.pinDir, `/sys/fs/bpf/weft/lab-${run}-node1`)

    t.notOk(existsSync(join(lab.stateDir, 'workloads.json')), 'no local workload file: the workloads are on NATS')
    const argv = daemonCommand(lab.plan, node1)
    t.same(argv.slice(argv.indexOf('--nats'), argv.indexOf('--nats') + 4), ['--nats', 'nats://198.18.0.254:4222', '--creds', `/run/weft/labs/${run}/creds/node-node1.json`], 'daemons read NATS as their node')
    t.notOk(argv.includes('--workloads'))
    t.same(openLab(run).pods, lab.pods, 'openLab reads the same lab back from state.json')
    t.same(listLabs().map((l) => [l.runId, l.status]), [[run, 'up']])

    for (const target of ['client', 'node1']) {
      const routes = await lab.run(target, ['ip', 'route', 'show'])
      t.notMatch(routes.stdout, /default/, `${target} has no default route`)
    }
    t.match((await lab.run('echo-b', ['ip', 'route', 'show'])).stdout, /198\.18\.0\.0\/15 via 198\.18\.2\.1 dev eth0/)
  })

  await t.test('NATS with JetStream and auth runs in the lab, with weft control', async (t) => {
    t.equal(lab.natsUrl, 'nats://198.18.0.254:4222')
    const natsPid = lab.natsPid()
    t.ok(natsPid, 'nats-server runs')
    t.match(readFileSync(`/proc/${natsPid}/cmdline`, 'utf8'), /^nats-server\0-c\0/, 'it is nats-server')
    t.equal(readFileSync(`/proc/${natsPid}/cgroup`, 'utf8').match(/^0::(.*)$/m)?.[1], `/weft-${run}/control/nats`, 'in a cgroup of the run')
    const underlayInode = statSync(`/run/netns/weft-${run}-ul`).ino
    t.equal(spawnSync('readlink', [`/proc/${natsPid}/ns/net`], { encoding: 'utf8' }).stdout.trim(), `net:[${underlayInode}]`, 'in the underlay netns')
    t.match((await lab.run('node2', ['ip', '-4', 'route', 'get', '198.18.0.254'])).stdout, /dev underlay/, 'nodes reach it on the underlay')
    const conf = readFileSync(join(lab.stateDir, 'nats', 'nats-server.conf'), 'utf8')
    t.match(conf, /listen: "198\.18\.0\.254:4222"/)
    t.match(conf, new RegExp(`store_dir: "/run/weft/labs/${run}/nats/jetstream"`))
    t.match(conf, /user: "node-node1"/)
    t.match(conf, /user: "node-node2"/)

    for (const user of ['operator', 'control', 'node-node1', 'node-node2']) {
      const file = lab.credsFile(user)
      t.equal(file, `/run/weft/labs/${run}/creds/${user}.json`)
      t.equal(statSync(file).mode & 0o777, 0o600, `${user}.json is 0600`)
      t.match(JSON.parse(readFileSync(file, 'utf8')), { servers: 'nats://198.18.0.254:4222', user, pass: /.{8,}/ })
    }
    t.throws(() => lab.credsFile('node-node9'), /no NATS user "node-node9" \(users: operator, control, node-node1, node-node2\)/)

    const context = readContext()
    t.equal(context.current, `lab-${run}`, 'the lab context is current')
    t.match(context.contexts[`lab-${run}`], { servers: 'nats://198.18.0.254:4222', user: 'operator' })
    t.ok(lab.contextIsCurrent())

    const controlPid = lab.controlPid()
    t.ok(controlPid, 'weft control runs')
    t.equal(readFileSync(`/proc/${controlPid}/cgroup`, 'utf8').match(/^0::(.*)$/m)?.[1], `/weft-${run}/control/plane`)
    t.match(readFileSync(join(lab.stateDir, 'control.log'), 'utf8'), /"msg":"registered pod\.default\.client"/, 'the pods were registered through it')
  })

  await t.test('the operator lists the registered nodes and pods over NATS from the host, with no flags', async (t) => {
    // resolveBusOptions with no flags and no WEFT_NATS_* is what weft get/apply do: the current context.
    const env = { ...process.env, WEFT_NATS_URL: undefined, WEFT_NATS_USER: undefined, WEFT_NATS_PASSWORD: undefined }
    const options = resolveBusOptions({}, env)
    t.match(options, { servers: 'nats://198.18.0.254:4222', user: 'operator' })
    const bus = await connectBus(options)
    t.teardown(() => bus.close())
    const pods = await bus.listResources('pod')
    t.same(pods.map((p) => p.key), ['pod.default.client', 'pod.default.echo-a', 'pod.default.echo-b', 'pod.default.outsider'])
    const outsider = JSON.parse(pods[3]?.value ?? '{}')
    t.same(outsider, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: 'outsider',
        namespace: 'default',
        labels: {},
        annotations: { 'weft.dev/cgroup': join(cgroup2(), `weft-${run}`, 'nodes', 'node1', 'outsider'), 'weft.dev/enrolled': 'false' },
      },
      spec: { nodeName: 'node1', serviceAccountName: 'default' },
      status: { podIP: '198.18.1.4', phase: 'Running' },
    })
    t.same(JSON.parse(pods[2]?.value ?? '{}').metadata.labels, { app: 'echo' }, 'labels from the topology file')
    const nodes = await bus.listResources('node')
    t.same(nodes.map((n) => JSON.parse(n.value)), [
      { apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name: 'node1' }, spec: { address: '198.18.0.2', proxyIp: '198.18.1.1', podCIDR: '198.18.1.0/24' } },
      { apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name: 'node2' }, spec: { address: '198.18.0.3', proxyIp: '198.18.2.1', podCIDR: '198.18.2.0/24' } },
    ])
  })

  await t.test("a node's credentials read configuration but cannot write it", async (t) => {
    const node: Bus = await lab.connect('node-node1')
    t.teardown(() => node.close())
    t.equal((await node.listResources('pod')).length, 4, 'reads')
    const refused = await node.putResource('pod.default.client', '{}').then(() => undefined, (error: unknown) => error)
    t.ok(refused instanceof BusError && refused.kind === 'permission', 'a permission error')
    t.equal((refused as Error).message, 'nats: user node-node1 may not write configuration (permission denied on $KV.weft-config.pod.default.client)')
  })

  await t.test('NATS killed mid-traffic comes back on the same address with the same store and credentials', async (t) => {
    const operator = await lab.connect()
    t.teardown(() => operator.close())
    const before = await operator.configRevision()
    const oldPid = lab.natsPid()
    await lab.stopNats('SIGKILL')
    t.equal(lab.natsPid(), undefined, 'stopped')
    t.notOk(alive(oldPid))
    const down = await connectBus({ ...JSON.parse(readFileSync(lab.credsFile('operator'), 'utf8')), servers: lab.natsUrl, connectTimeoutMs: 1000 }).then(() => undefined, (error: unknown) => error)
    t.match(down, { kind: 'unreachable', message: /^cannot reach NATS at nats:\/\/198\.18\.0\.254:4222: .*is the lab up/ }, 'while it is down, clients are told')
    await lab.startNats()
    t.ok(lab.natsPid() && lab.natsPid() !== oldPid, 'running again, a new process')
    const deadline = Date.now() + 15_000
    let revision = 0
    for (;;) {
      try {
        revision = await operator.configRevision()
        break
      } catch (error) {
        if (Date.now() > deadline) throw error
        await new Promise((resolve) => setTimeout(resolve, 200))
      }
    }
    t.equal(revision, before, 'the existing client reconnected and the store kept every revision')
    t.equal((await operator.listResources('pod')).length, 4)
    const reply = await requestRegister(operator, { ...(lab.resources()[2] as object), metadata: { name: 'late', namespace: 'default', labels: {} }, status: { podIP: '198.18.1.99' } }, { waitForControlMs: 15_000 })
    t.match(reply, { ok: true, key: 'pod.default.late' }, 'weft control reconnected and serves again')
    await lab.stopNats()
    await lab.startNats()
    t.ok(lab.natsPid(), 'a clean stop and start works too')
  })

  await t.test('a second lab is refused, naming the first and how to remove it', async (t) => {
    // Were either accepted, its lab must not outlive the test.
    const [second, third] = [testRunId(), testRunId()]
    t.teardown(() => { labDown(second); labDown(third) })
    await t.rejects(labUp({ nodes: ['node1'] }, { runId: second, startDaemons: false }), LabBusyError)
    await t.rejects(labUp({ nodes: ['node1'] }, { runId: third, startDaemons: false }), { message: new RegExp(`run ${run}.*weft lab down --run-id ${run}`) })
  })

  await t.test('pods reach each other by pod IP, across nodes and on one node', async (t) => {
    const node = process.execPath
    await startIn(t, lab, 'echo-b', [node, '-e', tcpServerScript, '7000'], /listening/)
    await startIn(t, lab, 'echo-a', [node, '-e', tcpServerScript, '7000'], /listening/)
    const across = await lab.run('client', [node, '-e', tcpClientScript, '198.18.2.2', '7000'], { timeoutMs: 5000 })
    t.same([across.code, across.stdout.trim()], [0, '198.18.1.2'], 'client (node1) -> echo-b (node2), source is the pod ip')
    const local = await lab.run('outsider', [node, '-e', tcpClientScript, '198.18.1.3', '7000'], { timeoutMs: 5000 })
    t.same([local.code, local.stdout.trim()], [0, '198.18.1.4'], 'outsider -> echo-a on the same node')
    const back = await lab.run('echo-b', [node, '-e', tcpClientScript, '198.18.1.3', '7000'], { timeoutMs: 5000 })
    t.same([back.code, back.stdout.trim()], [0, '198.18.2.2'], 'echo-b (node2) -> echo-a (node1)')
    const fromNode = await lab.run('node1', [node, '-e', tcpClientScript, '198.18.2.2', '7000'], { timeoutMs: 5000 })
    t.same([fromNode.code, fromNode.stdout.trim()], [0, '198.18.0.2'], 'node1 reaches a pod on node2 from its underlay address')
    const fromHost = await new Promise<string>((resolve) => {
      const client = spawn(node, ['-e', tcpClientScript, '198.18.2.2', '7000'], { stdio: ['ignore', 'pipe', 'ignore'] })
      let out = ''
      client.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()))
      client.on('close', () => resolve(out.trim()))
    })
    t.equal(fromHost, '198.18.0.1', 'the host reaches pods through wh-<run>')
    const outside = await lab.run('client', [node, '-e', tcpClientScript, '203.0.113.1', '80'], { timeoutMs: 5000 })
    t.equal(outside.stdout.trim(), 'error ENETUNREACH', 'nothing outside the lab ranges is routable from a pod')
    const outsideNode = await lab.run('node2', [node, '-e', tcpClientScript, '203.0.113.1', '80'], { timeoutMs: 5000 })
    t.equal(outsideNode.stdout.trim(), 'error ENETUNREACH', 'nor from a node')
  })

  await t.test('exec runs in the pod netns and cgroup and passes the exit code', async (t) => {
    const result = await lab.run('client', ['sh', '-c', 'cat /proc/self/cgroup; ip -4 -o addr show dev eth0; echo oops >&2; exit 3'])
    t.equal(result.code, 3)
    t.match(result.stdout, new RegExp(`^0::/weft-${run}/nodes/node1/client$`, 'm'))
    t.match(result.stdout, /inet 198\.18\.1\.2\/24/)
    t.equal(result.stderr, 'oops\n')
    const killed = await lab.run('client', ['sh', '-c', 'kill -USR1 $$'])
    t.equal(killed.code, 128 + 10, 'killed by a signal: 128 + its number, as a shell reports it (SIGUSR1)')
    const onNode = await lab.run('node2', ['ip', '-4', '-o', 'addr', 'show', 'dev', 'pods'])
    t.match(onNode.stdout, /inet 198\.18\.2\.1\/24/, 'a node target runs in the node netns')
    t.throws(() => lab.exec('nope', ['true']), /no pod or node "nope" \(pods: client, echo-a, echo-b, outsider; nodes: node1, node2\)/)
  })

  await t.test('weft lab ls, exec and bad input on the command line', async (t) => {
    const ls = runLabCli(['ls', '-o', 'json'])
    t.equal(ls.code, 0, ls.stderr)
    const listed = JSON.parse(ls.stdout)
    t.equal(listed.runId, run)
    t.match(listed.nats, { url: 'nats://198.18.0.254:4222', context: `lab-${run}`, current: true, pid: lab.natsPid() })
    t.match(runLabCli(['ls']).stdout, new RegExp(`NATS nats://198\\.18\\.0\\.254:4222 \\(pid \\d+\\), context lab-${run} \\(current\\)`), 'ls shows the NATS URL and context')
    t.match(listed.nodes[0], { name: 'node1', address: '198.18.0.2', namespace: `weft-${run}-node1` })
    t.same(
      listed.pods.map((p: { name: string; node: string; ip: string; labels: object; enrolled: boolean }) => [p.name, p.node, p.ip, p.labels, p.enrolled]),
      [['client', 'node1', '198.18.1.2', {}, true], ['echo-a', 'node1', '198.18.1.3', { app: 'echo' }, true], ['echo-b', 'node2', '198.18.2.2', { app: 'echo' }, true], ['outsider', 'node1', '198.18.1.4', {}, false]],
    )
    const exec = runLabCli(['exec', '--run-id', run, 'echo-b', '--', 'sh', '-c', 'echo hi; exit 5'])
    t.same([exec.code, exec.stdout], [5, 'hi\n'], 'exit code and stdout passed through')
    t.equal(runLabCli(['exec', '--run-id', run, 'echo-b', '--', 'sh', '-c', 'kill -TERM $$']).code, 128 + 15, 'killed by SIGTERM: 143')
    const table = runLabCli(['ls']).stdout.split('\n').map((line) => line.split(/\s{2,}/))
    t.same(
      table.find((row) => row[0] === 'node1'),
      ['node1', '198.18.0.2', '198.18.1.1', '198.18.1.0/24', `weft-${run}-node1`, '-'],
      'ls shows a row per node: name, address, proxy ip, pod range, namespace, daemon pid (none here)',
    )
    t.same(table.find((row) => row[0] === 'echo-b'), ['echo-b', 'node2', '198.18.2.2', 'yes', 'app=echo'], 'and a row per pod')

    const oneLine = (result: { code: number; stderr: string }, pattern: RegExp, name: string): void => {
      t.not(result.code, 0, `${name}: non-zero exit`)
      t.match(result.stderr, /^weft: [^\n]+\n$/, `${name}: exactly one line starting with weft:`)
      t.match(result.stderr, pattern, name)
    }
    oneLine(runLabCli(['exec', 'nope', '--', 'true']), /no pod or node "nope"/, 'unknown pod')
    oneLine(runLabCli(['ls', '--bogus']), /unknown option --bogus/, 'unknown flag')
    oneLine(runLabCli(['ls', '--run-id', 'zzzzzz']), /no lab zzzzzz/, 'unknown run')
    const bad = join(lab.stateDir, 'bad.yaml')
    await import('node:fs').then((fs) => fs.writeFileSync(bad, 'nodes: [node1]\npods:\n  - {name: a, node: node7}\n'))
    oneLine(runLabCli(['up', '-f', bad]), new RegExp(`${bad.replace(/[./]/g, '\\$&')}:3: pods\\[0\\] \\(a\\): unknown node "node7"`), 'malformed topology')
  })

  await t.test('down removes every trace of its run and leaves another run alone', async (t) => {
    // Another run's things, made by hand: down of this run must not touch them.
    const other = testRunId()
    const otherNetns = `weft-${other}-fake`
    const otherCgroup = join(cgroup2(), `weft-${other}`, 'nodes', 'node1')
    const otherPins = `/sys/fs/bpf/weft/lab-${other}-node1`
    t.teardown(() => labDown(other))
    spawnSync('ip', ['netns', 'add', otherNetns])
    mkdirSync(otherCgroup, { recursive: true })
    mkdirSync(otherPins, { recursive: true })
    const otherProcess = spawn('ip', ['netns', 'exec', otherNetns, 'sleep', '60'], { stdio: 'ignore' })

    // This run's processes in a pod and a node (one ignoring SIGTERM), and a pin dir.
    const inPod = lab.exec('client', ['sleep', '60'], { stdio: 'ignore' })
    const stubborn = lab.exec('node2', ['sh', '-c', 'trap "" TERM; while :; do sleep 1; done'], { stdio: 'ignore' })
    mkdirSync(join(lab.node('node1').pinDir, 'links'), { recursive: true })
    // Running, and the stubborn one ignoring SIGTERM already (else down's SIGTERM would do).
    const sigtermIgnored = (pid: number | undefined): boolean => {
      const ignored = /^SigIgn:\s+([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
      return ignored !== undefined && (BigInt(`0x${ignored}`) & (1n << 14n)) !== 0n // SIGTERM is 15: bit 14
    }
    await until('the pod and node processes to run, one ignoring SIGTERM', () => alive(inPod.pid) && sigtermIgnored(stubborn.pid))

    const natsPid = lab.natsPid()
    const controlPid = lab.controlPid()
    lab.down()
    t.same(labLeftovers(run), [], 'nothing of the run is left')
    t.notOk(alive(natsPid), 'nats-server is gone')
    t.notOk(alive(controlPid), 'weft control is gone')
    t.notOk(`lab-${run}` in readContext().contexts, 'its context is removed')
    t.equal(readContext().current, undefined, 'and no context is current')
    t.notOk(alive(inPod.pid), 'the pod process is gone')
    t.notOk(alive(stubborn.pid), 'the process ignoring SIGTERM is gone too')
    lab.down()
    t.pass('down again is a no-op')

    t.ok(netnsList().includes(otherNetns), "another run's netns is still there")
    t.ok(existsSync(otherCgroup), "another run's cgroup is still there")
    t.ok(existsSync(otherPins), "another run's pins are still there")
    t.ok(alive(otherProcess.pid), "another run's process still runs")
    labDown(other)
    t.same(labLeftovers(other), [], 'and its own down removes it')
    t.notOk(alive(otherProcess.pid))
  })
})

t.test('down cleans up after a crash that lost state.json', async (t) => {
  if (!requireLab(t)) return
  const lab = await startLab(t, { nodes: ['node1', 'node2'], pods: [{ name: 'a', node: 'node1' }, { name: 'b', node: 'node2' }] })
  const sleeper = lab.exec('b', ['sleep', '60'], { stdio: 'ignore' })
  mkdirSync(join(lab.node('node2').pinDir, 'maps'), { recursive: true })
  rmSync(join(lab.stateDir, 'state.json'))
  t.same(listLabs().map((l) => [l.runId, l.status]), [[lab.runId, 'partial']], 'ls still finds the run')
  t.throws(() => openLab(lab.runId), /has no state .*weft lab down --run-id/)
  const cli = runLabCli(['down', '--run-id', lab.runId])
  t.equal(cli.code, 0, `weft lab down finds the run without state (${cli.stderr.trim().split('\n').pop()})`)
  t.same(labLeftovers(lab.runId), [])
  t.notOk(alive(sleeper.pid))
})

// A stand-in for `weft node`: answers /readyz on the node's underlay address, and logs what it
// sees (so the test can check it runs where the real daemon will: node netns, daemon cgroup,
// with the cgroup root and bpffs visible).
const standInDaemon = `
const { existsSync, readFileSync } = require('node:fs')
const [address, cgroupRoot] = process.argv.slice(1)
console.log('stand-in sees cgroup root: ' + existsSync(cgroupRoot) + ', bpffs: ' + existsSync('/sys/fs/bpf'))
require('node:http').createServer((req, res) => res.writeHead(req.url === '/readyz' ? 200 : 404).end())
  .listen(15020, address, () => console.log('stand-in ready on ' + address))
process.on('SIGTERM', () => { console.log('stand-in stopping'); process.exit(0) })
`

t.test('node daemons start in the node netns and daemon cgroup, and stop on request', async (t) => {
  if (!requireLab(t)) return
  const lab = await startLab(t, { nodes: ['node1', 'node2'], pods: [{ name: 'a', node: 'node1' }] }, {
    startDaemons: true,
    daemonCommand: (_plan, node) => [process.execPath, '-e', standInDaemon, node.address, node.cgroupRoot],
  })
  const node1 = lab.node('node1')
  const pid = lab.daemonPid('node1')
  t.ok(pid, 'daemon pid from its cgroup')
  t.equal(readFileSync(`/proc/${pid}/cgroup`, 'utf8').match(/^0::(.*)$/m)?.[1], `/weft-${lab.runId}/daemons/node1`, 'in the daemon cgroup')
  t.equal(spawnSync('readlink', [`/proc/${pid}/ns/net`], { encoding: 'utf8' }).stdout.trim(), `net:[${statSync(`/run/netns/${node1.netns}`).ino}]`, 'in the node netns')
  t.match(readFileSync(node1.logFile, 'utf8'), /stand-in sees cgroup root: true, bpffs: true\nstand-in ready on 198\.18\.0\.2/, 'logs to <node>.log')

  await lab.stopDaemon('node1')
  t.equal(lab.daemonPid('node1'), undefined, 'stopped')
  t.match(readFileSync(node1.logFile, 'utf8'), /stand-in stopping/, 'with SIGTERM by default')
  await lab.startDaemon('node1')
  t.ok(lab.daemonPid('node1'), 'started again')
  await lab.stopDaemon('node2', 'SIGKILL')
  t.equal(lab.daemonPid('node2'), undefined, 'killed')
  t.ok(openLab(lab.runId).daemonPid('node1'), 'a lab opened from state.json sees the daemon too')
})

t.test('a daemon that dies before it is ready fails up, which cleans up and keeps the log', async (t) => {
  if (!requireLab(t)) return
  const runId = testRunId()
  t.teardown(() => labDown(runId))
  await t.rejects(
    labUpWhenFree(t, { nodes: ['node1'] }, { runId, daemonCommand: () => ['sh', '-c', 'echo cannot start: no config; exit 3'] }),
    { message: new RegExp(`node daemon node1 exited with code 3 before it was ready; see /tmp/weft-lab-${runId}-node1\\.log \\(last lines: cannot start: no config\\)`) },
  )
  t.same(labLeftovers(runId), [])
  t.match(readFileSync(`/tmp/weft-lab-${runId}-node1.log`, 'utf8'), /cannot start: no config/)
  for (const name of ['node1', 'control', 'nats-server']) rmSync(`/tmp/weft-lab-${runId}-${name}.log`, { force: true })
})
