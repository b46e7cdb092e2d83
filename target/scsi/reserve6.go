package scsi

// SPC-2 RESERVE(6)/(10) and RELEASE(6)/(10): a logical unit reservation
// held by one I_T nexus. Third-party and extent reservations are not
// supported (their CDB bits fail as reserved bits). The rules, in the
// state machine (pr_state.go):
//   - RESERVE from the holder succeeds again; from anyone else while it is
//     held, RESERVATION CONFLICT.
//   - RELEASE from a nexus that does not hold it is a no-op with GOOD.
//   - While held, every other nexus gets RESERVATION CONFLICT except for
//     INQUIRY, REPORT LUNS, REQUEST SENSE, REPORT TARGET PORT GROUPS,
//     RESERVE/RELEASE themselves and PREVENT ALLOW MEDIUM REMOVAL with
//     PREVENT 0; PERSISTENT RESERVE IN and OUT conflict for every nexus.
//   - While any persistent reservation registration exists, RESERVE and
//     RELEASE conflict (CRH 0).
//   - A logical unit reset, a target reset and the loss of the holder's I_T
//     nexus (logout, connection loss, I_T NEXUS RESET) release it.

func reserveSPC2(r request) error {
	return r.lu.applyPR(PROp{Kind: OpReserve, Nexus: NexusIDOf(r.cmd.Nexus)}, r.cmd)
}

func releaseSPC2(r request) error {
	return r.lu.applyPR(PROp{Kind: OpRelease, Nexus: NexusIDOf(r.cmd.Nexus)}, r.cmd)
}
