// src/datapath/route.ts: the one decision of where a connection or request to a pod goes, which
// the L4 splice and the L7 transports share.
import t from 'tap'
import { buildSnapshot } from '../src/config/resources/index.ts'
import { routeTo } from '../src/datapath/route.ts'

const snapshot = buildSnapshot(new Map<string, unknown>([
  ['node._.node1', { apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name: 'node1' }, spec: { address: '198.18.0.2', proxyIp: '198.18.0.2', podCIDR: '198.18.1.0/24' } }],
  ['node._.node2', { apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name: 'node2' }, spec: { address: '198.18.0.3', proxyIp: '198.18.0.3', podCIDR: '198.18.2.0/24' } }],
]))
const here = { ip: '198.18.1.5', port: 8080, node: 'node1', identity: 'spiffe://cluster.local/ns/default/sa/web' }
const there = { ip: '198.18.2.5', port: 8080, node: 'node2', identity: 'spiffe://cluster.local/ns/default/sa/web' }
const client = { ip: '198.18.1.9', identity: 'spiffe://cluster.local/ns/default/sa/client' }

t.test('a pod of this node, or an address that is no known pod: direct, pooled by ip:port', async (t) => {
  t.same(routeTo(here, client, snapshot, 'node1', 15008), { path: 'direct', key: '198.18.1.5:8080' })
  t.same(routeTo({ ip: '198.18.9.9', port: 80, node: undefined, identity: undefined }, client, snapshot, 'node1', 15008), { path: 'direct', key: '198.18.9.9:80' })
  t.same(routeTo({ ...there, node: 'node-unknown' }, client, snapshot, 'node1', 15008).path, 'direct', 'a node the snapshot does not know: direct')
})

t.test('a pod of another node: the tunnel to that node, as the source pod, asking for the destination\'s identity', async (t) => {
  t.same(routeTo(there, client, snapshot, 'node1', 15008), {
    path: 'tunnel', key: '198.18.2.5:8080|198.18.0.3|198.18.1.9', peerAddress: '198.18.0.3', unknownIdentity: undefined,
    tunnel: { peerAddress: '198.18.0.3', peerPort: 15008, destination: '198.18.2.5:8080', destinationIdentity: there.identity, source: client },
  })
})

t.test('without both identities there is no tunnel, and the route says why', async (t) => {
  const anonymous = routeTo(there, { ip: '198.18.1.77', identity: undefined }, snapshot, 'node1', 15008)
  t.equal(anonymous.path, 'tunnel')
  t.match(anonymous, { tunnel: undefined, unknownIdentity: /the source pod is not a known workload/ })
  t.match(routeTo({ ...there, identity: undefined }, client, snapshot, 'node1', 15008), { tunnel: undefined, unknownIdentity: /the endpoint is not a known pod/ })
})
