// `weft control --kubernetes`: where it looks for the API server, and the clear line it prints
// when there is none, before it touches NATS. (Against a live API server it has not been run: no
// kube-apiserver can run here; docs/kubernetes.md says so.)
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

import { defaultKubeConfig } from '../src/k8s/mirror.ts'

const weft = fileURLToPath(new URL('../bin/weft.js', import.meta.url))
const tmp = mkdtempSync(join(tmpdir(), 'weft-test-k8s-cli-'))
t.teardown(() => rmSync(tmp, { recursive: true, force: true }))

function control(args: string[], env: Record<string, string>): { code: number | null; stderr: string } {
  // NATS on a port nothing listens on: these runs must stop before they would connect.
  const r = spawnSync(process.execPath, [weft, 'control', '--ca-dir', join(tmp, 'ca'), '--nats', 'nats://127.0.0.1:1', ...args], {
    encoding: 'utf8', timeout: 30_000, env: { PATH: process.env.PATH ?? '', NODE_OPTIONS: process.env.NODE_OPTIONS ?? '', HOME: join(tmp, 'home'), ...env },
  })
  return { code: r.status, stderr: r.stderr }
}

const kubeconfig = (server: string): string => `apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster: {server: "${server}"}
users:
- name: mirror
  user: {token: not-a-real-token}
contexts:
- name: lab
  context: {cluster: lab, user: mirror}
current-context: lab
`

t.test('without KUBECONFIG, ~/.kube/config or a ServiceAccount, --kubernetes stops with one line', async (t) => {
  const r = control(['--kubernetes'], {})
  t.equal(r.code, 1)
  t.match(r.stderr, /^weft: control: no Kubernetes API to mirror: set KUBECONFIG \(or write ~\/\.kube\/config\), or run weft control in a pod with a ServiceAccount\n$/)
})

t.test('a KUBECONFIG that cannot be read is named', async (t) => {
  const r = control(['--kubernetes'], { KUBECONFIG: join(tmp, 'missing.yaml') })
  t.equal(r.code, 1)
  t.match(r.stderr, /^weft: control: cannot read the Kubernetes configuration \(KUBECONFIG=.*missing\.yaml\): /)
})

t.test('a bad --vip-cidr is refused before anything starts', async (t) => {
  const r = control(['--kubernetes', '--vip-cidr', '10.96.0.0/33'], {})
  t.equal(r.code, 2)
  t.match(r.stderr, /^weft: control: --vip-cidr: "10\.96\.0\.0\/33" is not an IPv4 CIDR/)
})

t.test('the API server comes from KUBECONFIG, else ~/.kube/config, else the pod\'s ServiceAccount', async (t) => {
  const home = join(tmp, 'home2')
  mkdirSync(join(home, '.kube'), { recursive: true })
  writeFileSync(join(home, '.kube', 'config'), kubeconfig('https://127.0.0.1:6443'))
  writeFileSync(join(tmp, 'other.yaml'), kubeconfig('https://127.0.0.2:6443'))
  t.equal(defaultKubeConfig({ HOME: home }).getCurrentCluster()?.server, 'https://127.0.0.1:6443')
  // KUBECONFIG is read by the client from process.env.
  const saved = process.env.KUBECONFIG
  process.env.KUBECONFIG = join(tmp, 'other.yaml')
  t.teardown(() => { if (saved === undefined) delete process.env.KUBECONFIG; else process.env.KUBECONFIG = saved })
  t.equal(defaultKubeConfig({ HOME: home, KUBECONFIG: join(tmp, 'other.yaml') }).getCurrentCluster()?.server, 'https://127.0.0.2:6443')
  delete process.env.KUBECONFIG
  t.throws(() => defaultKubeConfig({ HOME: join(tmp, 'nobody') }), { name: 'KubeConfigError', message: /no Kubernetes API to mirror/ })
  writeFileSync(join(tmp, 'no-context.yaml'), 'apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n')
  process.env.KUBECONFIG = join(tmp, 'no-context.yaml')
  t.throws(() => defaultKubeConfig({ HOME: home, KUBECONFIG: join(tmp, 'no-context.yaml') }), /names no current cluster/)
})
