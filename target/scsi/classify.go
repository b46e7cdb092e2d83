package scsi

// Transports schedule commands differently by their nature; these answer
// from the CDB alone, without a lookup.

// QuickCommand reports whether cdb is a plain READ or WRITE: one bounded
// backend call, safe to run where a long command would hold up others.
func QuickCommand(cdb []byte) bool {
	if len(cdb) == 0 {
		return false
	}
	switch cdb[0] {
	case opRead6, opRead10, opRead12, opRead16, opWrite6, opWrite10, opWrite12, opWrite16:
		return true
	}
	return false
}

// ContinuesAfterAbort reports whether the command keeps running through
// task management: SBC-4 lets a sanitize operation go on after ABORT TASK,
// LUN RESET and the like, so a transport must not wait for it to end
// before answering those functions.
func ContinuesAfterAbort(cdb []byte) bool {
	return len(cdb) > 0 && cdb[0] == opSanitize
}
