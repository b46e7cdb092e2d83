package fsm

import (
	"fmt"
	"strings"
)

// MaxLUN is the largest LUN flat space addressing can express.
const MaxLUN = 1<<14 - 1

// maxNameLen bounds device and node names (they become file names and
// label values).
const maxNameLen = 64

// checkName accepts names made of letters, digits, '-', '_' and '.', not
// starting with '.', as device and node names.
func checkName(kind, name string) error {
	if name == "" {
		return errorf(CodeInvalid, "%s name is empty", kind)
	}
	if len(name) > maxNameLen {
		return errorf(CodeInvalid, "%s name %q is longer than %d bytes", kind, name, maxNameLen)
	}
	if name[0] == '.' {
		return errorf(CodeInvalid, "%s name %q must not start with '.'", kind, name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return errorf(CodeInvalid, "%s name %q: only letters, digits, '-', '_' and '.' are allowed", kind, name)
		}
	}
	return nil
}

// CheckIQN accepts iSCSI names of the iqn., eui. and naa. formats (RFC
// 3720 3.2.6.3), in the lower case that stringprep leaves.
func CheckIQN(name string) error {
	switch {
	case name == "":
		return errorf(CodeInvalid, "iSCSI name is empty")
	case len(name) > 223:
		return errorf(CodeInvalid, "iSCSI name %q is longer than 223 bytes", name)
	case !strings.HasPrefix(name, "iqn.") && !strings.HasPrefix(name, "eui.") && !strings.HasPrefix(name, "naa."):
		return errorf(CodeInvalid, "iSCSI name %q must start with iqn., eui. or naa. (for example iqn.2025-01.com.example:disk1)", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == ':') {
			return errorf(CodeInvalid, "iSCSI name %q: only lower-case letters, digits, '-', '.' and ':' are allowed", name)
		}
	}
	return nil
}

// checkInitiatorPattern accepts an initiator name or a shell pattern of
// one ('*' and '?'), as SCST's ACLs do.
func checkInitiatorPattern(p string) error {
	if p == "" || len(p) > 223 || strings.ContainsAny(p, " \t\n\"'") {
		return errorf(CodeInvalid, "initiator name or pattern %q is not valid", p)
	}
	return nil
}

func checkLUNNumber(n uint64) error {
	if n > MaxLUN {
		return errorf(CodeInvalid, "LUN %d is above the maximum %d", n, MaxLUN)
	}
	return nil
}

func checkCHAP(u CHAPUser, what string) error {
	if u.User == "" || u.Secret == "" {
		return errorf(CodeInvalid, "%s CHAP user needs both a name and a secret", what)
	}
	if strings.ContainsAny(u.User+u.Secret, "\x00\n") {
		return errorf(CodeInvalid, "%s CHAP user or secret contains a NUL or newline", what)
	}
	return nil
}

func checkParam(p Param) error {
	if p.Key == "" || strings.ContainsAny(p.Key, " \t\n=") {
		return errorf(CodeInvalid, "parameter key %q is not valid", p.Key)
	}
	if strings.ContainsAny(p.Value, "\x00\n") {
		return errorf(CodeInvalid, "parameter %s: value contains a NUL or newline", p.Key)
	}
	return nil
}

// Check validates a device definition on its own.
func (d *Device) Check() error {
	if err := checkName("device", d.Name); err != nil {
		return err
	}
	switch d.Handler {
	case HandlerFileIO, HandlerBlockIO:
		if d.Path == "" {
			return errorf(CodeInvalid, "device %s: the %s handler needs a path", d.Name, d.Handler)
		}
	case HandlerNullIO:
		if d.Size <= 0 {
			return errorf(CodeInvalid, "device %s: the nullio handler needs a size", d.Name)
		}
	default:
		return errorf(CodeInvalid, "device %s: unknown handler %q (fileio, blockio or nullio)", d.Name, d.Handler)
	}
	if d.BlockSize != 512 && d.BlockSize != 4096 {
		return errorf(CodeInvalid, "device %s: block size %d is not supported (512 or 4096)", d.Name, d.BlockSize)
	}
	if d.Size < 0 || d.Size%int64(d.BlockSize) != 0 {
		return errorf(CodeInvalid, "device %s: size %d is not a multiple of the block size %d", d.Name, d.Size, d.BlockSize)
	}
	if d.Create && d.Size == 0 {
		return errorf(CodeInvalid, "device %s: a new backing file needs a size", d.Name)
	}
	if d.Serial == "" || d.NAA == "" {
		return errorf(CodeInvalid, "device %s: serial and NAA identifier must be set by the proposer", d.Name)
	}
	if len(d.Serial) > 64 {
		return errorf(CodeInvalid, "device %s: serial %q is longer than 64 bytes", d.Name, d.Serial)
	}
	return d.checkReplicaSets()
}

// checkReplicaSets validates Replicas and InSync on their own: valid,
// distinct node names, InSync ⊆ Replicas, the owner among the replicas,
// and no in-sync set on shared storage. Whether InSync may be empty is
// up to the command (CreateLUN fills it, Restore must carry it).
func (d *Device) checkReplicaSets() error {
	if !d.Replicated() {
		if len(d.InSync) > 0 {
			return errorf(CodeInvalid, "device %s: an in-sync set without replicas (shared storage has none)", d.Name)
		}
		return nil
	}
	seen := map[string]bool{}
	for _, r := range d.Replicas {
		if err := checkName("node", r); err != nil {
			return fmt.Errorf("device %s replicas: %w", d.Name, err)
		}
		if seen[r] {
			return errorf(CodeInvalid, "device %s: replica %s listed twice", d.Name, r)
		}
		seen[r] = true
	}
	inSync := map[string]bool{}
	for _, r := range d.InSync {
		if !seen[r] {
			return errorf(CodeInvalid, "device %s: in-sync node %q is not one of its replicas %v", d.Name, r, d.Replicas)
		}
		if inSync[r] {
			return errorf(CodeInvalid, "device %s: in-sync node %s listed twice", d.Name, r)
		}
		inSync[r] = true
	}
	if d.Owner != "" && !seen[d.Owner] {
		return errorf(CodeInvalid, "device %s: owner %s is not one of its replicas %v", d.Name, d.Owner, d.Replicas)
	}
	return nil
}

// checkInSyncInvariant is the invariant every replicated device in the
// state keeps: a non-empty in-sync set holding the owner, if any.
func (d *Device) checkInSyncInvariant() error {
	if !d.Replicated() {
		return nil
	}
	if len(d.InSync) == 0 {
		return errorf(CodeInvalid, "device %s: replicated, but no replica is in sync", d.Name)
	}
	if d.Owner != "" && !d.IsInSync(d.Owner) {
		return errorf(CodeInvalid, "device %s: owner %s is not in the in-sync set %v", d.Name, d.Owner, d.InSync)
	}
	return nil
}

// checkTarget validates a target definition on its own.
func (t *Target) check() error {
	if err := CheckIQN(t.IQN); err != nil {
		return err
	}
	if err := checkLUNs(t.LUNs); err != nil {
		return fmt.Errorf("target %s: %w", t.IQN, err)
	}
	groups := map[string]bool{}
	for _, g := range t.Groups {
		if err := checkName("initiator group", g.Name); err != nil {
			return fmt.Errorf("target %s: %w", t.IQN, err)
		}
		if groups[g.Name] {
			return errorf(CodeInvalid, "target %s: initiator group %s defined twice", t.IQN, g.Name)
		}
		groups[g.Name] = true
		for _, p := range g.Initiators {
			if err := checkInitiatorPattern(p); err != nil {
				return err
			}
		}
		if err := checkLUNs(g.LUNs); err != nil {
			return fmt.Errorf("target %s group %s: %w", t.IQN, g.Name, err)
		}
	}
	for _, p := range t.AllowedInitiators {
		if err := checkInitiatorPattern(p); err != nil {
			return err
		}
	}
	for _, u := range t.IncomingUsers {
		if err := checkCHAP(u, "incoming"); err != nil {
			return err
		}
	}
	if t.OutgoingUser != nil {
		if err := checkCHAP(*t.OutgoingUser, "mutual"); err != nil {
			return err
		}
	}
	for _, p := range t.Params {
		if err := checkParam(p); err != nil {
			return err
		}
	}
	return nil
}

func checkLUNs(luns []LUN) error {
	seen := map[uint64]bool{}
	for _, l := range luns {
		if err := checkLUNNumber(l.Number); err != nil {
			return err
		}
		if seen[l.Number] {
			return errorf(CodeInvalid, "LUN %d mapped twice", l.Number)
		}
		seen[l.Number] = true
	}
	return nil
}

// checkMapped refuses LUN maps of t naming devices that do not exist in s.
func (s *State) checkMapped(t *Target) error {
	all := [][]LUN{t.LUNs}
	for _, g := range t.Groups {
		all = append(all, g.LUNs)
	}
	for _, luns := range all {
		for _, l := range luns {
			if s.Devices[l.Device] == nil {
				return errorf(CodeNotFound, "target %s LUN %d: no device %q", t.IQN, l.Number, l.Device)
			}
		}
	}
	return nil
}
