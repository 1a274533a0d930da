// The control plane (`weft control`): the workload registry over NATS. See README.md.
export { requestDeregister, requestRegister, type ControlRequestOptions } from './client.ts'
export { checkRegistration, deregisterWorkload, deregistrationKey, registerWorkload, registerWorkloads, REGISTRY_KINDS, type Registration } from './registry.ts'
export { serveControl, type ControlService, type ServeControlOptions } from './service.ts'
export { CONTROL_QUEUE, CONTROL_SUBJECTS, DEREGISTER_SUBJECT, REGISTER_SUBJECT, type RegistryReply } from './subjects.ts'
