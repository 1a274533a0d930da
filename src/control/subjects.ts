// The control plane's request subjects. A request carries one resource as JSON; the reply is a
// RegistryReply as JSON. Served by `weft control` in the queue group below, so several replicas
// share the requests.

/** Register (create or replace) a workload: a v1 Pod or a weft.dev/v1alpha1 Node. */
export const REGISTER_SUBJECT = 'weft.control.register'
/** Remove a workload: the resource, or just `{kind, namespace?, name}`. */
export const DEREGISTER_SUBJECT = 'weft.control.deregister'
/** The CA: a node's CSR subject (`weft.control.csr.<node>`) and the operator's rotate request. */
export { CA_ROTATE_SUBJECT, CSR_SUBJECTS, csrSubject } from '../bus/subjects.ts'
/** Everything the control plane serves (what its NATS user must be allowed to subscribe). */
export const CONTROL_SUBJECTS = 'weft.control.>'
export const CONTROL_QUEUE = 'weft-control'

/** The reply to a register or deregister request. `revision` is the config revision of the write. */
export type RegistryReply = { ok: true; key: string; revision: number } | { ok: false; error: string }
