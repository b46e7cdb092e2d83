package scstconf

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The check and parse functions here return messages without a position;
// the parser attaches the value's position, Validate the element's. Sharing
// them keeps a hand-built File and a parsed one under the same rules.

func parseBool(name, s string) (bool, error) {
	switch s {
	case "0":
		return false, nil
	case "1":
		return true, nil
	}
	return false, fmt.Errorf("bad boolean %q for %s: want 0 or 1", s, name)
}

func parseUint(name, s string, min, max uint64) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad number %q for %s", s, name)
	}
	if n < min || n > max {
		return 0, fmt.Errorf("%s %d out of range [%d, %d]", name, n, min, max)
	}
	return n, nil
}

func parseSetupID(s string) error {
	if _, err := strconv.ParseUint(s, 0, 32); err != nil {
		return fmt.Errorf("bad number %q for setup_id: want a 32-bit number such as 0x1234", s)
	}
	return nil
}

func checkBlockSize(n uint64) error {
	if n != 512 && n != 4096 {
		return fmt.Errorf("blocksize %d not supported: want 512 or 4096", n)
	}
	return nil
}

// parseSize reads "size" (bytes) or "size_mb" (MiB, as in SCST).
func parseSize(name, s string) (int64, error) {
	max := uint64(math.MaxInt64)
	unit := int64(1)
	if name == "size_mb" {
		unit = 1 << 20
		max >>= 20
	}
	n, err := parseUint(name, s, 1, max)
	if err != nil {
		return 0, err
	}
	return int64(n) * unit, nil
}

// maxLen holds the longest value SCST accepts for identification strings
// that end up in fixed-size INQUIRY fields.
var maxLen = map[string]int{
	"t10_vend_id": 8,
	"prod_id":     16,
	"usn":         20,
}

func checkIdent(name, s string) error {
	if n, ok := maxLen[name]; ok && len(s) > n {
		return fmt.Errorf("%s %q is longer than %d bytes", name, s, n)
	}
	return checkText(name, s)
}

// checkText rejects what Format cannot write: a value never spans lines.
func checkText(what, s string) error {
	if strings.ContainsAny(s, "\n") {
		return fmt.Errorf("%s contains a newline", what)
	}
	return nil
}

// checkName accepts names of devices, groups and targets. They must be one
// word because other statements refer to them by a single word, and SCST
// turns them into sysfs directory names, which excludes "/".
func checkName(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%s name is empty", what)
	case strings.ContainsAny(s, " \t\r\v\f\n"):
		return fmt.Errorf("%s name %q contains white space", what, s)
	case strings.Contains(s, "/"):
		return fmt.Errorf("%s name %q contains \"/\"", what, s)
	}
	return nil
}

// checkISCSIName applies the one rule every initiator relies on: RFC 3720
// names start with a type prefix and are at most 223 bytes.
func checkISCSIName(s string) error {
	if err := checkName("target", s); err != nil {
		return err
	}
	lower := strings.ToLower(s)
	if !strings.HasPrefix(lower, "iqn.") && !strings.HasPrefix(lower, "eui.") && !strings.HasPrefix(lower, "naa.") {
		return fmt.Errorf("target name %q is not an iSCSI name: want iqn., eui. or naa. prefix", s)
	}
	if len(s) > 223 {
		return fmt.Errorf("target name %q is longer than 223 bytes", s)
	}
	return nil
}

func checkState(s string) error {
	switch s {
	case StateActive, StateNonOptimized, StateStandby, StateUnavailable, StateOffline, StateTransitioning:
		return nil
	}
	return fmt.Errorf("bad ALUA state %q: want active, nonoptimized, standby, unavailable, offline or transitioning", s)
}

func checkHandler(h string) error {
	switch {
	case h == HandlerFileIO || h == HandlerBlockIO || h == HandlerNullIO:
		return nil
	case strings.HasPrefix(h, "dev_"):
		return fmt.Errorf("handler %s passes SCSI commands through to a local device, which a userspace target cannot do", h)
	}
	return fmt.Errorf("handler %q is not supported: want vdisk_fileio, vdisk_blockio or vdisk_nullio", h)
}

// isCHAPKey matches IncomingUser and its numbered variants
// (IncomingUser1, ...), which is how SCST's sysfs names repeated users and
// how some scstadmin versions write them.
func isCHAPKey(key, base string) bool {
	rest, ok := strings.CutPrefix(key, base)
	if !ok {
		return false
	}
	for _, c := range rest {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func parseCHAP(key, s string) (CHAPUser, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return CHAPUser{}, fmt.Errorf("%s wants \"user secret\", got %d words", key, len(f))
	}
	return CHAPUser{User: f[0], Secret: f[1]}, nil
}

// checkCHAP keeps a hand-built user writable as one "user secret" value.
func checkCHAP(key string, u CHAPUser) error {
	got, err := parseCHAP(key, u.User+" "+u.Secret)
	if err != nil || got.User != u.User || got.Secret != u.Secret {
		return fmt.Errorf("%s user %q and secret must each be one non-empty word", key, u.User)
	}
	return nil
}

// paramChecks lists the per-target iSCSI attributes iscsi-scst exposes, with
// a syntax check for each. Ranges are those of RFC 7143 where it has them.
var paramChecks = map[string]func(key, v string) error{
	"HeaderDigest":             checkDigest,
	"DataDigest":               checkDigest,
	"InitialR2T":               checkYesNo,
	"ImmediateData":            checkYesNo,
	"MaxRecvDataSegmentLength": checkRange(512, 1<<24-1),
	"MaxXmitDataSegmentLength": checkRange(512, 1<<24-1),
	"FirstBurstLength":         checkRange(512, 1<<24-1),
	"MaxBurstLength":           checkRange(512, 1<<24-1),
	"MaxOutstandingR2T":        checkRange(1, 65535),
	"QueuedCommands":           checkRange(1, 65535),
	"NopInInterval":            checkRange(0, math.MaxUint32),
	"NopInTimeout":             checkRange(0, math.MaxUint32),
	"RspTimeout":               checkRange(0, math.MaxUint32),
	"allowed_portal":           checkNonEmpty,
	// allowed_initiator is hatarget's own: a login ACL of initiator name
	// patterns, for targets that should refuse unknown initiators outright
	// rather than show them an empty default LUN set.
	"allowed_initiator": checkNonEmpty,
}

// repeatableParams may occur more than once in a target.
var repeatableParams = map[string]bool{"allowed_portal": true, "allowed_initiator": true}

func checkParam(key, v string) error {
	check, ok := paramChecks[key]
	if !ok {
		return fmt.Errorf("unknown iSCSI target parameter %q", key)
	}
	if err := check(key, v); err != nil {
		return err
	}
	return checkText(key, v)
}

func checkDigest(key, v string) error {
	for d := range strings.SplitSeq(v, ",") {
		if !strings.EqualFold(d, "None") && !strings.EqualFold(d, "CRC32C") {
			return fmt.Errorf("bad %s %q: want None, CRC32C or a comma-separated list of them", key, v)
		}
	}
	return nil
}

func checkYesNo(key, v string) error {
	if !strings.EqualFold(v, "Yes") && !strings.EqualFold(v, "No") {
		return fmt.Errorf("bad %s %q: want Yes or No", key, v)
	}
	return nil
}

func checkRange(min, max uint64) func(key, v string) error {
	return func(key, v string) error {
		_, err := parseUint(key, v, min, max)
		return err
	}
}

func checkNonEmpty(key, v string) error {
	if v == "" {
		return errors.New(key + " is empty")
	}
	return nil
}
