// The nats-server configuration of a cluster install (daemonset/nats.yaml's ConfigMap), rendered
// by the same renderNatsServerConfig and permission functions the lab uses, so the cluster's
// users may do exactly what the lab's may. Passwords are not in it: nats-server reads
// `$WEFT_..._PASSWORD` from its environment, which the StatefulSet fills from the
// weft-nats-credentials Secret. test/k8s-manifests.test.ts checks the committed file against this.
import { controlPermissions, nodePermissions, renderNatsServerConfig } from '../bus/index.ts'

/** The NATS users of a cluster install and the environment variable holding each password. */
export const CLUSTER_NATS_USERS = [
  { user: 'operator', passwordVariable: 'WEFT_OPERATOR_PASSWORD' },
  // "control" is the name the bus lets create the buckets (src/bus/bus.ts).
  { user: 'control', passwordVariable: 'WEFT_CONTROL_PASSWORD' },
  // One user for every node: a DaemonSet's pods share their Secret. Per-node users (as the lab
  // has) would need credentials minted per node; until then a node may write any node's status
  // and ask the CA for any node's pods (docs/kubernetes.md, "Limits").
  { user: 'node', passwordVariable: 'WEFT_NODE_PASSWORD' },
] as const

export const CLUSTER_NATS_PORT = 4222
export const CLUSTER_NATS_MONITOR_PORT = 8222
export const CLUSTER_NATS_STORE = '/data/jetstream'

/** nats-server.conf for the cluster: JetStream on the StatefulSet's volume, the users above, /healthz on the monitor port. */
export function renderClusterNatsConfig(): string {
  // renderNatsServerConfig quotes every value; a quoted "$VAR" is a literal to nats-server, so
  // each password is rendered as a marker and then replaced by the bare variable reference.
  const marker = (variable: string): string => `@@${variable}@@`
  const permissionsOf = (user: string): ReturnType<typeof controlPermissions> | undefined =>
    user === 'control' ? controlPermissions(user) : user === 'node' ? nodePermissions('*', user) : undefined
  let text = renderNatsServerConfig({
    host: '0.0.0.0',
    port: CLUSTER_NATS_PORT,
    storeDir: CLUSTER_NATS_STORE,
    serverName: 'weft-nats',
    users: CLUSTER_NATS_USERS.map(({ user, passwordVariable }) => ({ user, pass: marker(passwordVariable), permissions: permissionsOf(user) })),
  })
  for (const { passwordVariable } of CLUSTER_NATS_USERS) text = text.replace(JSON.stringify(marker(passwordVariable)), `$${passwordVariable}`)
  return text.replace('# Written by weft (src/bus/server.ts). Regenerate rather than edit.', '# Rendered by src/k8s/nats-config.ts (scripts/node.sh src/k8s/nats-config.ts --write); do not edit by hand.')
    + `http: "0.0.0.0:${CLUSTER_NATS_MONITOR_PORT}"\n`
}

/** daemonset/nats.yaml with its ConfigMap's nats.conf replaced by `conf`. */
export function withNatsConfig(manifest: string, conf: string): string {
  const start = manifest.indexOf('  nats.conf: |\n')
  if (start < 0) throw new Error('daemonset/nats.yaml has no "  nats.conf: |" block')
  const body = start + '  nats.conf: |\n'.length
  const end = manifest.indexOf('\n---', body)
  const indented = conf.trimEnd().split('\n').map((line) => (line === '' ? '' : `    ${line}`)).join('\n')
  return manifest.slice(0, body) + indented + manifest.slice(end)
}

// `scripts/node.sh src/k8s/nats-config.ts` prints it; with --write it updates daemonset/nats.yaml.
if (import.meta.main) {
  if (process.argv.includes('--write')) {
    const { readFileSync, writeFileSync } = await import('node:fs')
    const file = new URL('../../daemonset/nats.yaml', import.meta.url)
    writeFileSync(file, withNatsConfig(readFileSync(file, 'utf8'), renderClusterNatsConfig()))
  } else {
    process.stdout.write(renderClusterNatsConfig())
  }
}
