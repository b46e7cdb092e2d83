package iscsi

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Limits is what this target is willing to negotiate. Per-target overrides
// (scst.conf negotiation keys) replace single fields.
type Limits struct {
	// HeaderDigest and DataDigest list acceptable values in preference
	// order ("None", "CRC32C").
	HeaderDigest []string
	DataDigest   []string
	// MaxRecvDataSegmentLength is what we declare we can receive.
	MaxRecvDataSegmentLength uint32
	MaxBurstLength           uint32
	FirstBurstLength         uint32
	MaxOutstandingR2T        uint32
	ImmediateData            bool
	InitialR2T               bool
	DefaultTime2Wait         uint32
	DefaultTime2Retain       uint32
	// QueueDepth is the CmdSN window: how many commands a session may have
	// outstanding.
	QueueDepth uint32
}

// DefaultLimits are the target's defaults: generous enough for Linux's and
// Windows' initiator profiles, bounded so a session's memory stays small.
func DefaultLimits() Limits {
	return Limits{
		HeaderDigest:             []string{"None", "CRC32C"},
		DataDigest:               []string{"None", "CRC32C"},
		MaxRecvDataSegmentLength: 256 * 1024,
		MaxBurstLength:           1024 * 1024,
		FirstBurstLength:         256 * 1024,
		MaxOutstandingR2T:        1,
		ImmediateData:            true,
		InitialR2T:               false,
		DefaultTime2Wait:         2,
		DefaultTime2Retain:       20,
		QueueDepth:               64,
	}
}

// Negotiation bounds from RFC 7143 section 13.
const (
	minDataSegment = 512
	maxDataSegment = 1<<24 - 1
)

// SetParam applies one negotiation key from configuration (scst.conf key
// names) to l. Unknown keys are errors so a typo in a config file is caught.
func (l *Limits) SetParam(key, value string) error {
	switch key {
	case "HeaderDigest", "DataDigest":
		vals, err := parseDigestList(value)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if key == "HeaderDigest" {
			l.HeaderDigest = vals
		} else {
			l.DataDigest = vals
		}
	case "MaxRecvDataSegmentLength", "MaxXmitDataSegmentLength":
		// Our transmit size follows what the initiator declares; SCST's
		// MaxXmitDataSegmentLength only caps it, which the receive bound covers.
		return setNumber(&l.MaxRecvDataSegmentLength, key, value, minDataSegment, maxDataSegment)
	case "MaxBurstLength":
		return setNumber(&l.MaxBurstLength, key, value, minDataSegment, maxDataSegment)
	case "FirstBurstLength":
		return setNumber(&l.FirstBurstLength, key, value, minDataSegment, maxDataSegment)
	case "MaxOutstandingR2T":
		return setNumber(&l.MaxOutstandingR2T, key, value, 1, 65535)
	case "DefaultTime2Wait":
		return setNumber(&l.DefaultTime2Wait, key, value, 0, 3600)
	case "DefaultTime2Retain":
		return setNumber(&l.DefaultTime2Retain, key, value, 0, 3600)
	case "QueuedCommands":
		return setNumber(&l.QueueDepth, key, value, 1, 2048)
	case "ImmediateData":
		return setBool(&l.ImmediateData, key, value)
	case "InitialR2T":
		return setBool(&l.InitialR2T, key, value)
	default:
		return fmt.Errorf("%w %q", ErrUnknownParam, key)
	}
	return nil
}

// ErrUnknownParam reports a negotiation key this target does not know; a
// configuration importer may skip it with a warning.
var ErrUnknownParam = errors.New("unknown negotiation key")

func parseDigestList(v string) ([]string, error) {
	var out []string
	for _, d := range strings.Split(v, ",") {
		d = strings.TrimSpace(d)
		switch strings.ToLower(d) {
		case "none":
			out = append(out, "None")
		case "crc32c":
			out = append(out, "CRC32C")
		default:
			return nil, fmt.Errorf("unknown digest %q (want None or CRC32C)", d)
		}
	}
	return out, nil
}

func setNumber(dst *uint32, key, v string, lo, hi uint32) error {
	n, err := parseNumber(v)
	if err != nil || n < uint64(lo) || n > uint64(hi) {
		return fmt.Errorf("%s=%q: want a number from %d to %d", key, v, lo, hi)
	}
	*dst = uint32(n)
	return nil
}

func setBool(dst *bool, key, v string) error {
	b, ok := parseBool(v)
	if !ok {
		return fmt.Errorf("%s=%q: want Yes or No", key, v)
	}
	*dst = b
	return nil
}

// parseNumber reads an RFC 7143 numerical value: decimal, or hex with 0x.
func parseNumber(v string) (uint64, error) {
	if strings.HasPrefix(v, "0x") || strings.HasPrefix(v, "0X") {
		return strconv.ParseUint(v[2:], 16, 64)
	}
	return strconv.ParseUint(v, 10, 64)
}

func parseBool(v string) (value, ok bool) {
	switch strings.ToLower(v) {
	case "yes", "1", "true":
		return true, true
	case "no", "0", "false":
		return false, true
	}
	return false, false
}

func boolString(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

// Params are the values in force for one connection/session after login.
type Params struct {
	HeaderDigest bool
	DataDigest   bool
	// MaxXmitDataSegmentLength is the initiator's MaxRecvDataSegmentLength:
	// the largest data segment we may send.
	MaxXmitDataSegmentLength uint32
	// MaxRecvDataSegmentLength is ours: the largest segment we accept.
	MaxRecvDataSegmentLength uint32
	MaxBurstLength           uint32
	FirstBurstLength         uint32
	MaxOutstandingR2T        uint32
	ImmediateData            bool
	InitialR2T               bool
	DataPDUInOrder           bool
	DataSequenceInOrder      bool
	DefaultTime2Wait         uint32
	DefaultTime2Retain       uint32
	MaxConnections           uint32
	ErrorRecoveryLevel       uint32
	QueueDepth               uint32
}

// initialParams are RFC 7143's defaults, in force until negotiated.
func initialParams(l Limits) Params {
	return Params{
		MaxXmitDataSegmentLength: 8192,
		MaxRecvDataSegmentLength: l.MaxRecvDataSegmentLength,
		MaxBurstLength:           min(262144, l.MaxBurstLength),
		FirstBurstLength:         min(65536, l.FirstBurstLength),
		MaxOutstandingR2T:        1,
		ImmediateData:            l.ImmediateData,
		InitialR2T:               true,
		DataPDUInOrder:           true,
		DataSequenceInOrder:      true,
		DefaultTime2Wait:         2,
		DefaultTime2Retain:       20,
		MaxConnections:           1,
		QueueDepth:               l.QueueDepth,
	}
}

// negotiator answers the operational keys of one login.
type negotiator struct {
	limits    Limits
	params    Params
	discovery bool
	// answered records keys already negotiated: RFC 7143 6.2 forbids
	// renegotiating a key within a login.
	answered map[string]bool
}

func newNegotiator(l Limits, discovery bool) *negotiator {
	return &negotiator{limits: l, params: initialParams(l), discovery: discovery, answered: map[string]bool{}}
}

// keysForDiscovery lists the operational keys meaningful in a discovery
// session; the others are answered Irrelevant (RFC 7143 13).
var keysForDiscovery = map[string]bool{
	"HeaderDigest": true, "DataDigest": true, "MaxRecvDataSegmentLength": true,
	"DefaultTime2Wait": true, "DefaultTime2Retain": true, "ErrorRecoveryLevel": true,
	"MaxConnections": true,
}

// answer negotiates one initiator-offered key and returns the value to send
// back, or "" when nothing is sent (declarative keys the target need not
// echo). It returns an error for a violation that must fail the login.
func (n *negotiator) answer(key, value string) (string, error) {
	if n.answered[key] {
		return "", fmt.Errorf("key %s negotiated twice", key)
	}
	n.answered[key] = true
	if n.discovery && isSessionWideOperational(key) && !keysForDiscovery[key] {
		return "Irrelevant", nil
	}
	p, l := &n.params, &n.limits
	switch key {
	case "HeaderDigest":
		return pickDigest(value, l.HeaderDigest, &p.HeaderDigest), nil
	case "DataDigest":
		return pickDigest(value, l.DataDigest, &p.DataDigest), nil
	case "MaxRecvDataSegmentLength":
		v, ok := numberIn(value, minDataSegment, maxDataSegment)
		if !ok {
			return "Reject", nil
		}
		p.MaxXmitDataSegmentLength = v
		return "", nil // declarative: ours is declared separately
	case "MaxBurstLength":
		return negotiateMin(value, l.MaxBurstLength, minDataSegment, maxDataSegment, &p.MaxBurstLength), nil
	case "FirstBurstLength":
		ours := min(l.FirstBurstLength, l.MaxBurstLength)
		if n.answered["MaxBurstLength"] {
			ours = min(ours, p.MaxBurstLength)
		}
		return negotiateMin(value, ours, minDataSegment, maxDataSegment, &p.FirstBurstLength), nil
	case "MaxOutstandingR2T":
		return negotiateMin(value, l.MaxOutstandingR2T, 1, 65535, &p.MaxOutstandingR2T), nil
	case "MaxConnections":
		return negotiateMin(value, 1, 1, 65535, &p.MaxConnections), nil
	case "ErrorRecoveryLevel":
		return negotiateMin(value, 0, 0, 2, &p.ErrorRecoveryLevel), nil
	case "DefaultTime2Retain":
		return negotiateMin(value, l.DefaultTime2Retain, 0, 3600, &p.DefaultTime2Retain), nil
	case "DefaultTime2Wait":
		return negotiateMax(value, l.DefaultTime2Wait, 0, 3600, &p.DefaultTime2Wait), nil
	case "ImmediateData":
		return negotiateAnd(value, l.ImmediateData, &p.ImmediateData), nil
	case "InitialR2T":
		return negotiateOr(value, l.InitialR2T, &p.InitialR2T), nil
	case "DataPDUInOrder":
		// We reassemble by buffer offset, but keep in-order semantics: the
		// result of an OR with our Yes is always Yes.
		return negotiateOr(value, true, &p.DataPDUInOrder), nil
	case "DataSequenceInOrder":
		return negotiateOr(value, true, &p.DataSequenceInOrder), nil
	case "OFMarker", "IFMarker":
		// Markers were removed in RFC 7143; older initiators still offer them.
		if _, ok := parseBool(value); !ok {
			return "Reject", nil
		}
		return "No", nil
	case "OFMarkInt", "IFMarkInt":
		return "Irrelevant", nil
	case "TargetAlias", "TargetAddress", "TargetPortalGroupTag":
		// Target-declared keys the initiator must not send (RFC 7143 13.9-13.10).
		return "Reject", nil
	default:
		return "NotUnderstood", nil
	}
}

func isSessionWideOperational(key string) bool {
	switch key {
	case "MaxBurstLength", "FirstBurstLength", "MaxOutstandingR2T", "ImmediateData",
		"InitialR2T", "DataPDUInOrder", "DataSequenceInOrder":
		return true
	}
	return false
}

// finish checks cross-key constraints once the operational stage ends.
func (n *negotiator) finish() {
	if n.params.FirstBurstLength > n.params.MaxBurstLength {
		n.params.FirstBurstLength = n.params.MaxBurstLength
	}
}

func pickDigest(offer string, ours []string, dst *bool) string {
	for _, o := range strings.Split(offer, ",") {
		for _, d := range ours {
			if strings.EqualFold(strings.TrimSpace(o), d) {
				*dst = d == "CRC32C"
				return d
			}
		}
	}
	return "Reject"
}

func numberIn(v string, lo, hi uint32) (uint32, bool) {
	n, err := parseNumber(v)
	if err != nil || n < uint64(lo) || n > uint64(hi) {
		return 0, false
	}
	return uint32(n), true
}

func negotiateMin(offer string, ours, lo, hi uint32, dst *uint32) string {
	v, ok := numberIn(offer, lo, hi)
	if !ok {
		return "Reject"
	}
	*dst = min(v, ours)
	return strconv.FormatUint(uint64(*dst), 10)
}

func negotiateMax(offer string, ours, lo, hi uint32, dst *uint32) string {
	v, ok := numberIn(offer, lo, hi)
	if !ok {
		return "Reject"
	}
	*dst = max(v, ours)
	return strconv.FormatUint(uint64(*dst), 10)
}

func negotiateAnd(offer string, ours bool, dst *bool) string {
	v, ok := parseBool(offer)
	if !ok {
		return "Reject"
	}
	*dst = v && ours
	return boolString(*dst)
}

func negotiateOr(offer string, ours bool, dst *bool) string {
	v, ok := parseBool(offer)
	if !ok {
		return "Reject"
	}
	*dst = v || ours
	return boolString(*dst)
}
