// The control plane (`weft control`): the workload registry over NATS. See README.md.
export { serveCa, type CaService, type ServeCaOptions } from './ca-service.ts'
export { requestDeregister, requestRegister, requestRotateRoot, type ControlRequestOptions } from './client.ts'
export { checkRegistration, deregisterWorkload, deregistrationKey, registerWorkload, registerWorkloads, REGISTRY_KINDS, type Registration } from './registry.ts'
export { serveControl, type ControlService, type ServeControlOptions } from './service.ts'
export { CA_ROTATE_SUBJECT, CONTROL_QUEUE, CONTROL_SUBJECTS, CSR_SUBJECTS, DEREGISTER_SUBJECT, REGISTER_SUBJECT, csrSubject, type RegistryReply } from './subjects.ts'
