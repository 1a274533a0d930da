// The NATS layer: nats-server for weft (server.ts), the typed bus client (bus.ts), subject
// permissions per identity (permissions.ts), contexts and option resolution (context.ts).
export { connectBus, type Bus, type BusOptions, type ConfigEvent, type ConfigWatch, type NodeStatusEntry, type StoredResource, type WatchConfigOptions } from './bus.ts'
export { BusError, type BusErrorKind } from './errors.ts'
export { GAP_FETCH_LIMIT, REVISION_CHECK_MS, type CatchUp, type CatchUpReason, type FollowConfigOptions } from './follow.ts'
export { controlPermissions, nodePermissions, type SubjectPermissions } from './permissions.ts'
export {
  freePort,
  NatsServerError,
  renderNatsServerConfig,
  startNatsServer,
  type BusCredentials,
  type NatsServer,
  type NatsServerConfig,
  type NatsUser,
  type StartNatsServerOptions,
  type TlsFiles,
} from './server.ts'
export { CA_ROTATE_SUBJECT, CONFIG_BUCKET, CONFIG_CHANGES, configChangeSubject, CSR_SUBJECTS, STATUS_BUCKET, TRUST_BUCKET, TRUST_BUNDLE_KEY, csrSubject, inboxPrefixFor, kvSubject, statusSubject, streamOf } from './subjects.ts'
export {
  contextFilePath,
  readContext,
  removeContext,
  resolveBusOptions,
  writeContext,
  type BusContext,
  type BusFlags,
  type ContextFile,
} from './context.ts'
