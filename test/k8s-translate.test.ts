// weft control's mirror of the Kubernetes API, the translation part: a cluster as
// `kubectl get namespaces,nodes,pods,services,endpointslices -A -o json` prints it
// (test/fixtures/k8s/cluster.json) turned into weft resources, which weft's own snapshot then
// reads as a node would.
import { readFileSync } from 'node:fs'
import type { V1EndpointSlice, V1Namespace, V1Node, V1Pod, V1Service } from '@kubernetes/client-node'
import t from 'tap'

import { buildSnapshot, type Pod, type Resource } from '../src/config/resources/index.ts'
import { planMirror } from '../src/k8s/plan.ts'
import { SOURCE_ANNOTATION, translateCluster, type ClusterObjects } from '../src/k8s/translate.ts'
import { checkManifest } from './helpers/k8s-schema.ts'

const ctx = { vipCidr: '10.96.0.0/12', trustDomain: 'cluster.local' }
const list = JSON.parse(readFileSync(new URL('./fixtures/k8s/cluster.json', import.meta.url), 'utf8')) as { kind: 'List'; items: Array<{ kind: string; metadata: { name: string } }> }

function cluster(items = list.items): ClusterObjects {
  const of = <T>(kind: string): T[] => structuredClone(items.filter((i) => i.kind === kind)) as T[]
  return { namespaces: of<V1Namespace>('Namespace'), nodes: of<V1Node>('Node'), pods: of<V1Pod>('Pod'), services: of<V1Service>('Service'), endpointSlices: of<V1EndpointSlice>('EndpointSlice') }
}
const snapshotOf = (resources: Map<string, Resource>) => buildSnapshot(new Map(resources), ctx, 1)

t.test('the fixture is what a real API server returns (strictly valid Kubernetes objects)', async (t) => {
  for (const item of list.items) t.same(checkManifest(item), [], `${item.kind} ${item.metadata.name}`)
})

t.test('a cluster becomes nodes, the pods of labelled namespaces, every Service with a VIP, and their slices', async (t) => {
  const { resources, skipped } = translateCluster(cluster(), ctx)
  t.same([...resources.keys()].sort(), [
    'endpointslice.default.kubernetes',
    'endpointslice.kube-system.kube-dns-8x2lq',
    'endpointslice.shop.api-4kq9z',
    'endpointslice.shop.web-8j2kd',
    'node._.node-a',
    'node._.node-b',
    'pod.ledger.books-8d7c6b-l2m3n',
    'pod.shop.api-7f9c6d8b4-qw2er',
    'pod.shop.api-7f9c6d8b4-zz9yx',
    'pod.shop.batch-5b7d9c-k8s7d',
    'pod.shop.legacy-6c8f7d-abcde',
    'pod.shop.web-6d4cf56db6-x7k2p',
    'service.default.kubernetes',
    'service.kube-system.kube-dns',
    'service.shop.api',
    'service.shop.web',
  ])
  for (const resource of resources.values()) t.equal(resource.metadata.annotations?.[SOURCE_ANNOTATION], 'kubernetes', 'marked as the mirror\'s')
  t.same(skipped.map((s) => s.object).sort(), [
    'EndpointSlice shop/api-v6-2k3j4', 'Node node-c', 'Pod shop/agent-host-xyz12', 'Pod shop/pending-5f6d7c-ppppp', 'Pod shop/report-28fz1-qqqqq',
    'Service shop/api-headless', 'Service shop/payments',
  ], 'pods of unlabelled namespaces are not listed: they are not the mesh\'s')
  const reason = (object: string) => skipped.find((s) => s.object === object)?.reason
  t.match(reason('Node node-c'), /no IPv4 spec.podCIDR/)
  t.match(reason('Pod shop/pending-5f6d7c-ppppp'), /not scheduled yet/)
  t.match(reason('Pod shop/report-28fz1-qqqqq'), /finished \(phase Succeeded\)/)
  t.match(reason('Pod shop/agent-host-xyz12'), /host network/)
  t.match(reason('Service shop/api-headless'), /headless/)
  t.match(reason('Service shop/payments'), /ExternalName/)
  t.match(reason('EndpointSlice shop/api-v6-2k3j4'), /addressType IPv6/)
})

t.test('pods carry node, IP, service account, labels, UID and QoS class, one of each class', async (t) => {
  const { resources } = translateCluster(cluster(), ctx)
  const pod = (key: string) => resources.get(key) as Pod
  const web = pod('pod.shop.web-6d4cf56db6-x7k2p')
  t.same({ node: web.spec.nodeName, ip: web.status.podIP, sa: web.spec.serviceAccountName, uid: web.metadata.uid, qos: web.status.qosClass, labels: web.metadata.labels },
    { node: 'node-a', ip: '10.244.1.17', sa: 'web', uid: '0f5a2b1c-3d4e-4f50-8a9b-0c1d2e3f4a5b', qos: 'Guaranteed', labels: { 'pod-template-hash': '7c9d8f6b5', app: 'web' } })
  t.equal(pod('pod.shop.api-7f9c6d8b4-qw2er').status.qosClass, 'Burstable')
  t.equal(pod('pod.shop.batch-5b7d9c-k8s7d').status.qosClass, 'BestEffort')
  t.equal(pod('pod.shop.batch-5b7d9c-k8s7d').spec.serviceAccountName, 'default')
  t.same(pod('pod.shop.api-7f9c6d8b4-qw2er').spec.containers, [{ name: 'api', ports: [{ name: 'http', containerPort: 9080 }] }], 'TCP container ports only')
  const snapshot = snapshotOf(resources)
  t.same(snapshot.rejected, [])
  const workload = snapshot.workloadsByIp.get('10.244.1.17')
  t.equal(workload?.identity, 'spiffe://cluster.local/ns/shop/sa/web')
  t.same(snapshot.podsByNode.get('node-b')?.map((w) => w.name).sort(), ['api-7f9c6d8b4-qw2er', 'batch-5b7d9c-k8s7d', 'books-8d7c6b-l2m3n'])
  t.equal(snapshot.nodes.get('node-a')?.address, '192.0.2.11')
})

t.test('a Service with a named target port gets the port its EndpointSlice resolved; not-ready endpoints are left out', async (t) => {
  const snapshot = snapshotOf(translateCluster(cluster(), ctx).resources)
  const api = snapshot.services.get('10.96.14.7:80')
  t.equal(api?.port.targetPort, 'http')
  t.same(api?.endpoints.map((e) => `${e.ip}:${e.port}@${e.node}`), ['10.244.2.23:9080@node-b'], 'the ready pod on 9080; the not-ready one (10.244.1.31) is out')
  t.same(snapshot.services.get('10.96.14.8:80')?.endpoints, [], 'a terminating endpoint (ready: false) is out')
  t.same(snapshot.services.get('10.96.0.1:443')?.endpoints.map((e) => `${e.ip}:${e.port}`), ['192.0.2.2:6443'], 'the API server, an endpoint with no pod')
  t.same(snapshot.warnings, [])
})

t.test('kube-dns keeps its TCP ports only (weft proxies TCP)', async (t) => {
  const snapshot = snapshotOf(translateCluster(cluster(), ctx).resources)
  const dns = snapshot.servicesByName.get('kube-system/kube-dns')
  t.same(dns?.spec.ports.map((p) => `${p.name}/${p.port}`), ['dns-tcp/53', 'metrics/9153'])
  t.same(snapshot.services.get('10.96.0.10:53')?.endpoints.map((e) => `${e.ip}:${e.port}`), ['10.244.1.2:53', '10.244.2.2:53'])
  t.same(dns?.spec.selector, undefined, 'mirrored without its selector: EndpointSlices are the endpoints')
})

t.test('a pod opting out is mirrored but not enrolled', async (t) => {
  const snapshot = snapshotOf(translateCluster(cluster(), ctx).resources)
  t.equal(snapshot.workloadsByIp.get('10.244.1.50')?.enrolled, false)
  t.equal(snapshot.workloadsByIp.get('10.244.1.17')?.enrolled, true)
})

t.test('a namespace losing its label: its pods are deleted from the bucket, nothing else', async (t) => {
  const before = translateCluster(cluster(), ctx).resources
  const items = structuredClone(list.items) as Array<{ kind: string; metadata: { name: string; labels?: Record<string, string> } }>
  delete items.find((i) => i.kind === 'Namespace' && i.metadata.name === 'ledger')!.metadata.labels!['weft.dev/mesh']
  const after = translateCluster(cluster(items), ctx).resources
  // The bucket as the mirror left it, plus an operator's own resource, which is never the mirror's to delete.
  const stored = new Map<string, unknown>(before)
  stored.set('service.shop.operators-own', { apiVersion: 'v1', kind: 'Service', metadata: { name: 'operators-own', namespace: 'shop' }, spec: { clusterIP: '10.96.99.1', ports: [{ port: 80 }] } })
  t.same(planMirror(stored, after), { puts: [], deletes: ['pod.ledger.books-8d7c6b-l2m3n'] })
  t.same(planMirror(stored, before), { puts: [], deletes: [] }, 'nothing to do when nothing changed (key order aside)')
})

t.test('a changed pod is put again; an unchanged one is not', async (t) => {
  const stored = new Map<string, unknown>(JSON.parse(JSON.stringify([...translateCluster(cluster(), ctx).resources])) as Array<[string, unknown]>)
  const items = structuredClone(list.items) as Array<{ kind: string; metadata: { name: string }; status?: { conditions?: Array<{ type: string; status: string }> } }>
  const api = items.find((i) => i.metadata.name === 'api-7f9c6d8b4-zz9yx')!
  for (const c of api.status!.conditions!) if (c.type === 'Ready' || c.type === 'ContainersReady') c.status = 'True'
  const plan = planMirror(stored, translateCluster(cluster(items), ctx).resources)
  t.same(plan.puts.map(([key]) => key), ['pod.shop.api-7f9c6d8b4-zz9yx'])
  t.same(plan.deletes, [])
})
