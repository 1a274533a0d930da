// Whether the bus's `control` identity may serve the control subjects. The lab runs weft control
// as `control` when it may, and as `operator` until src/bus grants it (see README.md).
import { controlPermissions, type SubjectPermissions } from '../bus/index.ts'
import { CONTROL_SUBJECTS } from './subjects.ts'

export function controlUserMayServe(): boolean {
  const permissions: SubjectPermissions & { allowResponses?: unknown } = controlPermissions('control')
  return permissions.subscribe.allow.includes(CONTROL_SUBJECTS) && permissions.allowResponses === true
}
