// The lab: simulated Kubernetes nodes and pods on one machine (network namespaces, veths,
// bridges, cgroup v2), used by the tests, the demo and the benchmarks. See docs/architecture.md.
export { LabBusyError, LabError } from './errors.ts'
export { parseTopology, topologyFromShorthand, validateTopology, type Topology, type TopologyInput, type TopologyPod } from './topology.ts'
export {
  Lab,
  labDown,
  labDownAll,
  labUp,
  listLabs,
  openLab,
  randomRunId,
  type LabSummary,
  type LabUpOptions,
  type RunOptions,
  type RunResult,
} from './lab.ts'
export { ADMIN_PORT, HOST_UNDERLAY_IP, LAB_CIDR, NATS_ADDRESS, NATS_PORT, NATS_URL, labResources, planLab, type LabControl, type LabNats, type LabNatsUser, type LabNode, type LabPlan, type LabPod } from './plan.ts'
export { daemonCommand, type DaemonCommand } from './daemons.ts'
