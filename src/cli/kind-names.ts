// What a user may type for a kind on the command line: the kind (any case), its plural, or a
// short form, as kubectl accepts `svc`, `services` and `Service`.
import { ConfigError } from '../config/node-config.ts'
import { KINDS, type Kind, type KindInfo } from '../config/resources/index.ts'

/** Short forms (kubectl's where Kubernetes has one). */
const SHORT_NAMES: Partial<Record<Kind, string[]>> = {
  Service: ['svc'],
  Pod: ['po'],
  Node: ['no'],
  EndpointSlice: ['eps'],
  DestinationPolicy: ['dp'],
  AuthorizationPolicy: ['ap'],
  PeerAuthentication: ['pa'],
  HTTPRoute: ['hr'],
  GRPCRoute: ['gr'],
}

function plural(kind: string): string {
  const lower = kind.toLowerCase()
  return lower.endsWith('y') ? `${lower.slice(0, -1)}ies` : `${lower}s`
}

const byName = new Map<string, KindInfo>()
for (const info of Object.values(KINDS) as KindInfo[]) {
  for (const name of [info.kind.toLowerCase(), plural(info.kind), ...(SHORT_NAMES[info.kind as Kind] ?? [])]) byName.set(name, info)
}

/** `service (services, svc), pod (pods, po), ...` for the unknown-kind message and help. */
export function kindNamesList(): string {
  return (Object.values(KINDS) as KindInfo[])
    .map((info) => `${info.kind.toLowerCase()} (${[plural(info.kind), ...(SHORT_NAMES[info.kind as Kind] ?? [])].join(', ')})`)
    .join(', ')
}

/** The kind a command-line word names; throws a ConfigError listing the known ones. */
export function kindFromArgument(word: string): KindInfo {
  const info = byName.get(word.toLowerCase())
  if (!info) throw new ConfigError(`unknown kind "${word}"; known kinds: ${kindNamesList()}`)
  return info
}
