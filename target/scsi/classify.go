package scsi

// Transports schedule commands differently by their nature.

// QuickCommand reports whether the command cdb for lun of v is a plain
// READ or WRITE that this node executes with one call to a local device:
// safe to run where a long command would hold up others. A forwarded
// command, or a write that waits for replicas, takes a network round
// trip.
func QuickCommand(v View, lun uint64, cdb []byte) bool {
	if len(cdb) == 0 || v == nil {
		return false
	}
	write := plainWrite(cdb)
	if !write && !plainRead(cdb) {
		return false
	}
	lu := v.LU(lun)
	if lu == nil || !lu.executesHere() {
		return false
	}
	if !write {
		return true
	}
	n := lu.state.Load().networked
	return n == nil || !n.NetworkedWrites()
}

// plainRead reports whether cdb is a READ(6/10/12/16).
func plainRead(cdb []byte) bool {
	if len(cdb) == 0 {
		return false
	}
	switch cdb[0] {
	case opRead6, opRead10, opRead12, opRead16:
		return true
	}
	return false
}

// plainWrite reports whether cdb is a WRITE(6/10/12/16).
func plainWrite(cdb []byte) bool {
	if len(cdb) == 0 {
		return false
	}
	switch cdb[0] {
	case opWrite6, opWrite10, opWrite12, opWrite16:
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
