// The mirror's wiring: @kubernetes/client-node informers (list, then watch; a 410 Gone makes the
// informer list again; reconnects back off) for Namespaces, Pods, Services, EndpointSlices and
// Nodes, and on every change, after a short quiet period, the whole cluster is translated
// (translate.ts) and the difference written to the weft-config bucket (plan.ts). A periodic
// resync compares against the bucket again, so a write lost to a NATS outage is repaired.
//
// NOT TESTED AGAINST A LIVE CLUSTER: no kube-apiserver can run where weft is developed. The
// translation and the plan are tested on real object shapes; this file is the glue, kept small.
import { existsSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'

import {
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  makeInformer,
  type KubernetesObject,
  type ListWatch,
  type V1EndpointSlice,
  type V1Namespace,
  type V1Node,
  type V1Pod,
  type V1Service,
} from '@kubernetes/client-node'

import type { Bus } from '../bus/index.ts'
import type { ValidationContext } from '../config/resources/index.ts'
import type { Logger } from '../telemetry/log.ts'
import { planMirror } from './plan.ts'
import { translateCluster, type ClusterObjects } from './translate.ts'

/** The kinds of weft resources the mirror writes (and the key prefixes it reads back). */
const MIRRORED_KINDS = ['pod', 'service', 'endpointslice', 'node'] as const

export interface MirrorOptions {
  log: Logger
  validation: ValidationContext
  /** Default: KUBECONFIG (or ~/.kube/config), else the in-cluster ServiceAccount. */
  kubeConfig?: KubeConfig
  /** Wait this long after a change for more before writing. Default 200 ms. */
  quietMs?: number
  /** Compare with the bucket this often even without changes. Default 5 min. */
  resyncMs?: number
}

// makeInformer returns a ListWatch: an informer, an object cache and its resourceVersion.
type Cached<T extends KubernetesObject> = ListWatch<T>

/** Bounded exponential backoff for restarting an informer that stopped on an error. */
const RESTART_MIN_MS = 1_000
const RESTART_MAX_MS = 30_000

export class KubernetesMirror {
  readonly #options: Required<Omit<MirrorOptions, 'kubeConfig'>> & { kubeConfig: KubeConfig }
  #bus: Bus | undefined
  readonly #informers: Record<keyof ClusterObjects, Cached<KubernetesObject>>
  #timer: NodeJS.Timeout | undefined
  #resync: NodeJS.Timeout | undefined
  #running: Promise<void> | undefined
  #again = false
  #stopped = false
  #synced = false
  /** Skipped objects already logged, so a resync does not log them again. */
  #reported = new Set<string>()

  constructor(options: MirrorOptions) {
    const kubeConfig = options.kubeConfig ?? defaultKubeConfig()
    this.#options = { quietMs: 200, resyncMs: 300_000, ...options, kubeConfig }
    const core = kubeConfig.makeApiClient(CoreV1Api)
    const discovery = kubeConfig.makeApiClient(DiscoveryV1Api)
    const informer = <T extends KubernetesObject>(path: string, list: () => Promise<{ items: T[]; metadata?: { resourceVersion?: string } }>) =>
      makeInformer<T>(kubeConfig, path, list as never) as unknown as Cached<KubernetesObject>
    this.#informers = {
      namespaces: informer<V1Namespace>('/api/v1/namespaces', () => core.listNamespace()),
      pods: informer<V1Pod>('/api/v1/pods', () => core.listPodForAllNamespaces()),
      services: informer<V1Service>('/api/v1/services', () => core.listServiceForAllNamespaces()),
      endpointSlices: informer<V1EndpointSlice>('/apis/discovery.k8s.io/v1/endpointslices', () => discovery.listEndpointSliceForAllNamespaces()),
      nodes: informer<V1Node>('/api/v1/nodes', () => core.listNode()),
    }
  }

  /** Lists every kind, writes the first translation to `bus`, then follows the watches until stop(). */
  async start(bus: Bus): Promise<void> {
    this.#bus = bus
    const { log } = this.#options
    log.info('mirroring the Kubernetes API', { server: this.#options.kubeConfig.getCurrentCluster()?.server })
    for (const [kind, informer] of Object.entries(this.#informers)) {
      let delayMs = RESTART_MIN_MS
      informer.on('add', () => this.#changed())
      informer.on('update', () => this.#changed())
      informer.on('delete', () => this.#changed())
      informer.on('connect', () => { delayMs = RESTART_MIN_MS })
      informer.on('error', (error: unknown) => {
        if (this.#stopped) return
        log.warn('Kubernetes watch stopped; restarting', { kind, error: describe(error), inMs: delayMs })
        setTimeout(() => { if (!this.#stopped) void informer.start() }, delayMs).unref()
        delayMs = Math.min(delayMs * 2, RESTART_MAX_MS)
      })
    }
    await Promise.all(Object.values(this.#informers).map((informer) => informer.start()))
    // An informer whose first list failed has restarted itself (above); write nothing until every
    // kind is listed, or pods would be deleted for a Service list that has not arrived yet.
    while (!this.#stopped && !Object.values(this.#informers).every((i) => i.latestResourceVersion() !== '')) {
      await new Promise((resolve) => setTimeout(resolve, 500))
    }
    this.#synced = true
    await this.reconcile()
    this.#resync = setInterval(() => this.#changed(), this.#options.resyncMs)
    this.#resync.unref()
  }

  async stop(): Promise<void> {
    this.#stopped = true
    clearTimeout(this.#timer)
    clearInterval(this.#resync)
    await Promise.all(Object.values(this.#informers).map((informer) => informer.stop()))
    await this.#running
  }

  #changed(): void {
    if (!this.#synced || this.#stopped) return
    clearTimeout(this.#timer)
    this.#timer = setTimeout(() => void this.reconcile(), this.#options.quietMs)
  }

  /** Translates the informers' caches and writes the difference to the bucket; one at a time. */
  async reconcile(): Promise<void> {
    if (this.#running) {
      this.#again = true
      return await this.#running
    }
    this.#running = this.#reconcileOnce().finally(() => { this.#running = undefined })
    await this.#running
    if (this.#again && !this.#stopped) {
      this.#again = false
      await this.reconcile()
    }
  }

  async #reconcileOnce(): Promise<void> {
    const { log, validation } = this.#options
    const bus = this.#bus
    if (!bus) return
    const cluster = Object.fromEntries(Object.entries(this.#informers).map(([kind, informer]) => [kind, informer.list()])) as unknown as ClusterObjects
    const { resources, skipped } = translateCluster(cluster, validation)
    const reported = new Set<string>()
    for (const { object, reason } of skipped) {
      const line = `${object}: ${reason}`
      if (!this.#reported.has(line)) log.info('not mirrored', { object, reason })
      reported.add(line)
    }
    this.#reported = reported
    try {
      const stored = new Map<string, unknown>()
      for (const kind of MIRRORED_KINDS) {
        for (const entry of await bus.listResources(kind)) stored.set(entry.key, JSON.parse(entry.value))
      }
      const plan = planMirror(stored, resources)
      for (const [key, resource] of plan.puts) await bus.putResource(key, resource)
      for (const key of plan.deletes) await bus.deleteResource(key)
      if (plan.puts.length + plan.deletes.length > 0) log.info('mirrored', { put: plan.puts.length, deleted: plan.deletes.length, resources: resources.size })
    } catch (error) {
      // NATS unreachable or refusing: the next change or resync tries again.
      log.warn('cannot write the mirror to NATS; retrying at the next change or resync', { error: describe(error) })
    }
  }
}

export class KubeConfigError extends Error {
  override name = 'KubeConfigError'
}

/**
 * Where the API server is: KUBECONFIG (its first file), else ~/.kube/config, else the pod's
 * ServiceAccount (in a cluster); none of them is an error saying so, rather than the client's own
 * fallback to http://localhost:8080.
 */
export function defaultKubeConfig(env: NodeJS.ProcessEnv = process.env): KubeConfig {
  const config = new KubeConfig()
  const home = env.HOME ?? homedir()
  try {
    if (env.KUBECONFIG) config.loadFromDefault()
    else if (existsSync(join(home, '.kube', 'config'))) config.loadFromFile(join(home, '.kube', 'config'))
    else if (env.KUBERNETES_SERVICE_HOST) config.loadFromCluster()
    else throw new KubeConfigError('no Kubernetes API to mirror: set KUBECONFIG (or write ~/.kube/config), or run weft control in a pod with a ServiceAccount')
  } catch (error) {
    if (error instanceof KubeConfigError) throw error
    throw new KubeConfigError(`cannot read the Kubernetes configuration (${env.KUBECONFIG ? `KUBECONFIG=${env.KUBECONFIG}` : join(home, '.kube', 'config')}): ${(error as Error).message}`)
  }
  if (!config.getCurrentCluster()) throw new KubeConfigError(`the Kubernetes configuration names no current cluster (current-context "${config.getCurrentContext()}")`)
  return config
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message
  const status = (error as { statusCode?: number; code?: number; message?: string } | null)
  return status?.message ?? String(status?.statusCode ?? status?.code ?? error)
}
