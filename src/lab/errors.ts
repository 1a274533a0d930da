// Errors the lab reports to its users: the message is the whole story (what, to what, what to do)
// and is printed as is by the CLI after `weft: `.
export class LabError extends Error {
  override name = 'LabError'
}

// `up` found another lab: the address plan is fixed, so only one lab may be up at a time.
export class LabBusyError extends LabError {
  override name = 'LabBusyError'
  readonly otherRunId: string
  constructor(otherRunId: string) {
    super(`another lab is up (run ${otherRunId}); only one lab may run at a time: remove it with \`weft lab down --run-id ${otherRunId}\``)
    this.otherRunId = otherRunId
  }
}
