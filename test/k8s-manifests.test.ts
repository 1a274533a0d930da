// daemonset/: the manifests `kubectl apply -k daemonset/` installs, checked offline and strictly
// (every field known to the Kubernetes API, types and required fields), and checked against what
// weft itself accepts: the daemon's flags, the admin endpoints the probes call, the NATS users
// src/bus grants, the CA the control plane opens, the capabilities docs/kubernetes.md explains.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Registry } from 'prom-client'
import t from 'tap'
import { parseAllDocuments, parse as parseYaml } from 'yaml'

import { freePort } from '../src/bus/index.ts'
import { DEFAULTS, parseNodeArgs } from '../src/config/node-config.ts'
import { CertificateAuthority } from '../src/identity/index.ts'
import { CLUSTER_NATS_USERS, renderClusterNatsConfig } from '../src/k8s/nats-config.ts'
import { AdminServer } from '../src/telemetry/admin.ts'
import { checkManifest } from './helpers/k8s-schema.ts'
import { repoRoot } from './helpers/privileged.ts'

const dir = join(repoRoot, 'daemonset')
type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> }; [key: string]: unknown }

const kustomization = parseYaml(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as {
  namespace: string; resources: string[]
  secretGenerator: Array<{ name: string; envs?: string[]; files?: string[] }>
}
const objects: Obj[] = kustomization.resources.flatMap((file) => parseAllDocuments(readFileSync(join(dir, file), 'utf8')).map((doc) => {
  if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map(String).join('; ')}`)
  return doc.toJS() as Obj
}))
function find<T = Record<string, any>>(kind: string, name: string): T { // eslint-disable-line @typescript-eslint/no-explicit-any
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name)
  if (!found) throw new Error(`no ${kind} ${name} in daemonset/`)
  return found as unknown as T
}
/* eslint-disable @typescript-eslint/no-explicit-any */
const daemonSet = find<any>('DaemonSet', 'weft-node')
const nodeTemplate = daemonSet.spec.template.spec
const nodeContainer = nodeTemplate.containers[0]
const control = find<any>('Deployment', 'weft-control')
const controlContainer = control.spec.template.spec.containers[0]
const nats = find<any>('StatefulSet', 'weft-nats')
/* eslint-enable @typescript-eslint/no-explicit-any */

t.test('the kustomization lists every manifest in daemonset/, and each is a strictly valid Kubernetes object', async (t) => {
  const yamlFiles = readdirSync(dir).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort()
  t.same([...kustomization.resources].sort(), yamlFiles)
  t.equal(kustomization.namespace, 'weft-system')
  for (const object of objects) {
    t.same(checkManifest(object), [], `${object.kind} ${object.metadata.name}`)
    if (object.kind !== 'Namespace' && object.kind !== 'ClusterRole' && object.kind !== 'ClusterRoleBinding') {
      t.equal(object.metadata.namespace, 'weft-system', `${object.kind} ${object.metadata.name} is in weft-system`)
    }
  }
  t.ok(objects.some((o) => o.kind === 'Namespace' && o.metadata.name === 'weft-system'))
})

t.test('a misspelt or mistyped field fails the check, with its path', async (t) => {
  const copy = (): any => structuredClone(daemonSet) // eslint-disable-line @typescript-eslint/no-explicit-any
  const misspelt = copy()
  misspelt.spec.template.spec.hostNetwrk = misspelt.spec.template.spec.hostNetwork
  delete misspelt.spec.template.spec.hostNetwork
  t.same(checkManifest(misspelt), ['spec.template.spec.hostNetwrk: unknown field (did you mean "hostNetwork"?)'])

  const deep = copy()
  deep.spec.template.spec.containers[0].securityContext.capabilites = { add: ['NET_ADMIN'] }
  t.same(checkManifest(deep), ['spec.template.spec.containers[0].securityContext.capabilites: unknown field (did you mean "capabilities"?)'])

  const inMap = copy()
  inMap.spec.template.spec.volumes[0].hostPath.pth = '/sys/fs/bpf'
  t.match(checkManifest(inMap), ['spec.template.spec.volumes[0].hostPath.pth: unknown field (did you mean "path"?)'])

  const mistyped = copy()
  mistyped.spec.template.spec.containers[0].image = 3
  t.same(checkManifest(mistyped), ['spec.template.spec.containers.0.image: must be string'])

  const missing = copy()
  delete missing.spec.selector
  t.match(checkManifest(missing).join('\n'), /spec: must have required property selector/)

  t.match(checkManifest({ apiVersion: 'apps/v1', kind: 'DaemonSett', metadata: { name: 'x' } }), [/is not a kind this check knows/])
})

t.test('weft-node: host network, node-critical, on every node, surge updates', async (t) => {
  t.equal(nodeTemplate.hostNetwork, true)
  t.equal(nodeTemplate.dnsPolicy, 'ClusterFirstWithHostNet', 'finds weft-nats by its Service name from the host network')
  t.equal(nodeTemplate.priorityClassName, 'system-node-critical')
  t.same(nodeTemplate.tolerations, [{ operator: 'Exists' }], 'tolerates every taint')
  t.same(daemonSet.spec.updateStrategy, { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } })
  t.notOk(nodeContainer.ports, 'no ports: with hostNetwork they are hostPorts and block the surge pod')
  t.equal(nodeTemplate.automountServiceAccountToken, false, 'the daemon reads nothing from the Kubernetes API')
  t.ok(nodeContainer.resources.requests.cpu && nodeContainer.resources.requests.memory && nodeContainer.resources.limits.memory)
})

/** The daemon's arguments with the env references the kubelet expands. */
function nodeArgs(): string[] {
  const declared = new Set((nodeContainer.env as Array<{ name: string }>).map((e) => e.name))
  const values: Record<string, string> = { NODE_NAME: 'node-a', HOST_IP: '192.0.2.10' }
  const args = (nodeContainer.args as string[]).map((arg) => arg.replace(/\$\(([A-Z_]+)\)/g, (_, name: string) => {
    if (!declared.has(name)) throw new Error(`weft-node args use $(${name}), which env does not declare`)
    return values[name] ?? ''
  }))
  if (nodeContainer.command[0] !== 'weft' || args[0] !== 'node') throw new Error('weft-node runs something other than weft node')
  return args.slice(1)
}

t.test('weft-node: its arguments are ones weft node accepts, and point into its mounts', async (t) => {
  const parsed = parseNodeArgs(nodeArgs())
  if (parsed.help) throw new Error('--help in the DaemonSet')
  const { config } = parsed
  t.equal(config.name, 'node-a')
  t.equal(config.nodeIp, '192.0.2.10')
  t.equal(config.adminPort, DEFAULTS.adminPort, 'the probes call the default admin port')
  t.ok(config.drainTimeoutMs < nodeTemplate.terminationGracePeriodSeconds * 1000, 'connections drain before the kubelet kills the daemon')
  const mounts = nodeContainer.volumeMounts as Array<{ name: string; mountPath: string; readOnly?: boolean; mountPropagation?: string }>
  const volumes = new Map((nodeTemplate.volumes as Array<{ name: string; hostPath?: { path: string } }>).map((v) => [v.name, v]))
  const mountOf = (path: string) => mounts.find((m) => path === m.mountPath || path.startsWith(`${m.mountPath}/`))
  const pins = mountOf(config.pinDir)
  t.equal(pins && volumes.get(pins.name)?.hostPath?.path, '/sys/fs/bpf', 'pins land on the host\'s bpffs (they outlive the pod)')
  const cgroup = mountOf(config.cgroupRoot)
  t.equal(cgroup && volumes.get(cgroup.name)?.hostPath?.path, '/sys/fs/cgroup', 'the cgroup root is in the host\'s cgroup v2 tree')
  t.equal(cgroup?.readOnly, true)
  t.match(config.cgroupRoot, /\/kubepods(\.slice)?$/, 'attached at the kubelet\'s pod cgroup')
  for (const m of mounts) t.ok(volumes.get(m.name)?.hostPath, `${m.name} is a hostPath`)
})

t.test('weft-control mirrors the Kubernetes API with the Service range the nodes intercept', async (t) => {
  const args = controlContainer.args as string[]
  t.same([controlContainer.command[0], args[0]], ['weft', 'control'])
  t.ok(args.includes('--kubernetes'))
  const vip = (list: string[]) => list.find((a) => a.startsWith('--vip-cidr='))?.slice('--vip-cidr='.length)
  const nodeVip = (nodeContainer.args as string[])
  t.ok(vip(args), 'weft-control has --vip-cidr')
  t.equal(vip(args), vip(nodeVip), 'the same --vip-cidr as weft-node: a Service the mirror writes is one the nodes intercept')
  t.notOk(control.spec.template.spec.automountServiceAccountToken === false, 'weft-control gets its token (in-cluster API access)')
  // --help lists every flag the Deployment passes.
  const help = spawnSync(process.execPath, [join(repoRoot, 'bin', 'weft.js'), 'control', '--help'], { encoding: 'utf8' }).stdout
  for (const arg of args.slice(1)) t.ok(help.includes(`${arg.split('=')[0]} `) || help.includes(`${arg.split('=')[0]},`) || help.includes(`${arg.split('=')[0]}/`), `weft control --help names ${arg.split('=')[0]}`)
})

t.test('weft-node: /readyz and /healthz on the admin port are what the daemon serves', async (t) => {
  t.same(nodeContainer.readinessProbe.httpGet, { path: '/readyz', port: DEFAULTS.adminPort })
  t.same(nodeContainer.livenessProbe.httpGet, { path: '/healthz', port: DEFAULTS.adminPort })
  // The real admin server: not ready answers 503 (the kubelet keeps the pod out), ready 200.
  const port = await freePort()
  let ready = false
  const admin = new AdminServer({ listenIp: '127.0.0.1', port, registry: new Registry(), readiness: () => ({ ready, reason: ready ? 'ready' : 'starting' }) })
  await admin.listen()
  t.teardown(() => admin.close())
  const get = async (path: string) => (await fetch(`http://127.0.0.1:${port}${path}`)).status
  t.equal(await get('/readyz'), 503)
  t.equal(await get('/healthz'), 200)
  ready = true
  t.equal(await get('/readyz'), 200)
})

t.test('weft-node: the capabilities are exactly those docs/kubernetes.md explains, everything else dropped', async (t) => {
  const security = nodeContainer.securityContext
  t.same(security.capabilities.drop, ['ALL'])
  t.equal(security.privileged, false)
  t.equal(security.allowPrivilegeEscalation, false)
  t.equal(security.readOnlyRootFilesystem, true)
  t.same(security.seccompProfile, { type: 'RuntimeDefault' })
  const docs = readFileSync(join(repoRoot, 'docs', 'kubernetes.md'), 'utf8')
  const section = /## What the node daemon is granted\n([\s\S]*?)\n## /.exec(docs)?.[1] ?? ''
  const documented = [...section.matchAll(/^\| `(CAP_[A-Z_]+)` \| (granted|not granted) \|/gm)]
  t.same([...security.capabilities.add].sort(), documented.filter((m) => m[2] === 'granted').map((m) => m[1]!.replace(/^CAP_/, '')).sort())
  t.ok(documented.some((m) => m[2] === 'not granted'), 'the table also says what is left out and why')
})

t.test('the uninstall DaemonSet is strictly valid and runs weft node --uninstall on the pins weft-node makes', async (t) => {
  const docs = parseAllDocuments(readFileSync(join(dir, 'uninstall', 'weft-uninstall.yaml'), 'utf8')).map((d) => d.toJS() as Obj)
  t.equal(docs.length, 1)
  const uninstall = docs[0] as any // eslint-disable-line @typescript-eslint/no-explicit-any
  t.same(checkManifest(uninstall), [])
  const spec = uninstall.spec.template.spec
  t.same(spec.tolerations, nodeTemplate.tolerations, 'on every node weft-node runs on')
  const container = spec.containers[0]
  const script: string = container.args[0]
  const argv = /^weft (node .*) && exec sleep infinity$/.exec(script)?.[1]?.split(' ').map((a) => a.replace(/^"\$NODE_NAME"$/, 'node-a'))
  t.ok(argv, `runs weft node, then waits: ${script}`)
  const parsed = parseNodeArgs(argv!.slice(1))
  if (parsed.help) throw new Error('--help')
  t.equal(parsed.config.uninstall, true)
  const nodeParsed = parseNodeArgs(nodeArgs())
  if (nodeParsed.help) throw new Error('--help')
  t.equal(parsed.config.pinDir, nodeParsed.config.pinDir, 'the pin directory weft-node uses')
  t.match(container.readinessProbe.exec.command.join(' '), '/sys/fs/bpf/weft/$NODE_NAME', 'ready once that directory is gone')
  t.same(container.securityContext.capabilities, nodeContainer.securityContext.capabilities)
  t.same(container.volumeMounts.map((m: { mountPath: string }) => m.mountPath), ['/sys/fs/bpf'])
})

t.test('RBAC: weft control may only list and watch what it mirrors; the node daemon and NATS have no API access', async (t) => {
  const role = find<{ rules: Array<{ apiGroups: string[]; resources: string[]; verbs: string[] }> }>('ClusterRole', 'weft-control')
  for (const rule of role.rules) t.same([...rule.verbs].sort(), ['list', 'watch'], `${rule.resources.join(',')}: list and watch only`)
  const resources = role.rules.flatMap((r) => r.apiGroups.flatMap((g) => r.resources.map((res) => g === '' ? res : `${res}.${g}`))).sort()
  t.same(resources, ['endpointslices.discovery.k8s.io', 'namespaces', 'nodes', 'pods', 'services'])
  const binding = find<{ roleRef: { name: string }; subjects: Array<{ name: string; namespace: string }> }>('ClusterRoleBinding', 'weft-control')
  t.equal(binding.roleRef.name, 'weft-control')
  t.same(binding.subjects.map((s) => `${s.namespace}/${s.name}`), ['weft-system/weft-control'])
  t.equal(control.spec.template.spec.serviceAccountName, 'weft-control')
  const bound = new Set(objects.filter((o) => o.kind.endsWith('RoleBinding')).flatMap((o) => (o as unknown as { subjects: Array<{ name: string }> }).subjects.map((s) => s.name)))
  for (const name of ['weft-node', 'weft-nats']) {
    t.notOk(bound.has(name), `${name} is bound to no role`)
    t.equal(find<{ automountServiceAccountToken: boolean }>('ServiceAccount', name).automountServiceAccountToken, false, `${name} gets no token`)
  }
})

t.test('Secrets: every secretKeyRef names a generated Secret and a key generate-secrets.sh writes; the CA it makes opens', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'weft-test-secrets-'))
  t.teardown(() => rmSync(out, { recursive: true, force: true }))
  execFileSync('bash', [join(dir, 'generate-secrets.sh'), out], { stdio: 'pipe' })
  const keys = new Map<string, Set<string>>()
  for (const generator of kustomization.secretGenerator) {
    const names = new Set<string>()
    for (const env of generator.envs ?? []) {
      const file = join(out, env.replace(/^secrets\//, ''))
      t.equal(statSync(file).mode & 0o077, 0, `${env} is readable by its owner only`)
      for (const line of readFileSync(file, 'utf8').split('\n').filter(Boolean)) names.add(line.split('=')[0]!)
    }
    for (const entry of generator.files ?? []) {
      const [key, path] = entry.split('=') as [string, string]
      t.ok(existsSync(join(out, path.replace(/^secrets\//, ''))), `${path} is generated`)
      names.add(key)
    }
    keys.set(generator.name, names)
  }
  t.same(keys.get('weft-nats-credentials'), new Set(['operator-password', 'control-password', 'node-password']))
  const workloads = [nodeContainer, controlContainer, nats.spec.template.spec.containers[0]]
  let refs = 0
  for (const container of workloads) {
    for (const env of container.env ?? []) {
      const ref = env.valueFrom?.secretKeyRef
      if (!ref) continue
      refs++
      t.ok(keys.get(ref.name)?.has(ref.key), `${container.name}: ${env.name} <- ${ref.name}/${ref.key}`)
    }
  }
  t.equal(refs, 5, 'nats reads three passwords, control and node one each')
  const caVolume = control.spec.template.spec.volumes.find((v: { secret?: { secretName: string } }) => v.secret?.secretName === 'weft-ca')
  t.equal(caVolume.secret.defaultMode, 0o400, 'the CA key is mounted owner-only (the CA refuses others)')
  // The control plane opens the generated root as its plug-in CA (what --ca-cert/--ca-key do).
  const ca = await CertificateAuthority.open({ trustDomain: 'cluster.local', dir: join(out, 'ca-state'), plugin: { cert: join(out, 'ca-cert.pem'), key: join(out, 'ca-key.pem') } })
  t.equal(ca.mode, 'plug-in')
  // Run again: nothing changes (a re-run must not roll every pod with new passwords).
  const before = readFileSync(join(out, 'nats-credentials.env'), 'utf8')
  execFileSync('bash', [join(dir, 'generate-secrets.sh'), out], { stdio: 'pipe' })
  t.equal(readFileSync(join(out, 'nats-credentials.env'), 'utf8'), before)
})

t.test('NATS: the ConfigMap holds the users and permissions src/bus grants, and nats-server accepts it', async (t) => {
  const configMap = find<{ data: Record<string, string> }>('ConfigMap', 'weft-nats-config')
  t.equal(configMap.data['nats.conf'], renderClusterNatsConfig(), 'daemonset/nats.yaml is current (regenerate: scripts/node.sh src/k8s/nats-config.ts --write)')
  const env = new Map<string, string>((nats.spec.template.spec.containers[0].env as Array<{ name: string }>).map((e) => [e.name, 'x']))
  for (const { passwordVariable } of CLUSTER_NATS_USERS) t.ok(env.has(passwordVariable), `the StatefulSet sets ${passwordVariable}`)
  t.same(nats.spec.template.spec.containers[0].args, ['--config', '/etc/nats/nats.conf'])
  const conf = mkdtempSync(join(tmpdir(), 'weft-test-nats-conf-'))
  t.teardown(() => rmSync(conf, { recursive: true, force: true }))
  writeFileSync(join(conf, 'nats.conf'), configMap.data['nats.conf']!)
  const check = spawnSync('nats-server', ['-t', '-c', join(conf, 'nats.conf')], {
    env: { PATH: process.env.PATH ?? '', ...Object.fromEntries(CLUSTER_NATS_USERS.map((u) => [u.passwordVariable, `pw-${u.user}`])) },
    encoding: 'utf8',
  })
  t.error(check.error, 'nats-server runs (Debian: apt-get install nats-server)')
  t.equal(check.status, 0, `nats-server -t: ${check.stderr}${check.stdout}`)
})
