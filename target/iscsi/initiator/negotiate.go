package initiator

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// keyFunc is how a key's outcome follows from the two sides' values
// (RFC 7143 6.2).
type keyFunc uint8

const (
	fnList keyFunc = iota // the responder picks the first offered value it supports
	fnOr                  // Yes if either side says Yes
	fnAnd                 // Yes only if both say Yes
	fnMin                 // numeric minimum
	fnMax                 // numeric maximum
	fnDecl                // declarative: each side states its own value
)

type keyDef struct {
	fn     keyFunc
	lo, hi uint64 // valid range of numeric keys
}

// keyDefs covers the operational keys of RFC 7143 13 that an ERL 0,
// single-connection initiator negotiates.
var keyDefs = map[string]keyDef{
	"HeaderDigest":             {fn: fnList},
	"DataDigest":               {fn: fnList},
	"MaxConnections":           {fn: fnMin, lo: 1, hi: 65535},
	"InitialR2T":               {fn: fnOr},
	"ImmediateData":            {fn: fnAnd},
	"MaxRecvDataSegmentLength": {fn: fnDecl, lo: 512, hi: 1<<24 - 1},
	"MaxBurstLength":           {fn: fnMin, lo: 512, hi: 1<<24 - 1},
	"FirstBurstLength":         {fn: fnMin, lo: 512, hi: 1<<24 - 1},
	"DefaultTime2Wait":         {fn: fnMax, lo: 0, hi: 3600},
	"DefaultTime2Retain":       {fn: fnMin, lo: 0, hi: 3600},
	"MaxOutstandingR2T":        {fn: fnMin, lo: 1, hi: 65535},
	"DataPDUInOrder":           {fn: fnOr},
	"DataSequenceInOrder":      {fn: fnOr},
	"ErrorRecoveryLevel":       {fn: fnMin, lo: 0, hi: 2},
	// Markers were dropped by RFC 7143 but old targets still offer them;
	// AND with our No turns them off.
	"IFMarker": {fn: fnAnd},
	"OFMarker": {fn: fnAnd},
}

// targetDeclarations are informational keys a target sends unasked.
var targetDeclarations = map[string]bool{
	"TargetAlias":          true,
	"TargetPortalGroupTag": true,
	"TargetAddress":        true,
}

// Special answers that leave a key at its default.
const (
	notUnderstood = "NotUnderstood"
	irrelevant    = "Irrelevant"
	reject        = "Reject"
)

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

func parseBool(s string) (bool, bool) {
	switch s {
	case "Yes":
		return true, true
	case "No":
		return false, true
	}
	return false, false
}

// parseNum reads an RFC 7143 numerical value: decimal, or hex with 0x.
// Go's base-0 parsing is not used because it would read "010" as octal and
// "0b1" as binary, neither of which iSCSI has.
func parseNum(s string) (uint64, error) {
	if len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		return strconv.ParseUint(s[2:], 16, 64)
	}
	return strconv.ParseUint(s, 10, 64)
}

func parseRanged(key, s string, def keyDef) (uint64, error) {
	v, err := parseNum(s)
	if err != nil || v < def.lo || v > def.hi {
		return 0, fmt.Errorf("%s=%q is not a number in [%d, %d]", key, s, def.lo, def.hi)
	}
	return v, nil
}

func digestOffer(on bool) string {
	if on {
		return "CRC32C,None"
	}
	return "None"
}

// localValues is our side of every key, whether or not we offer it: it is
// what we answer when the target offers a key first.
func localValues(c *Config) map[string]string {
	u := func(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
	return map[string]string{
		"HeaderDigest":             digestOffer(c.HeaderDigest),
		"DataDigest":               digestOffer(c.DataDigest),
		"MaxConnections":           "1",
		"InitialR2T":               yesNo(c.InitialR2T.or(false)),
		"ImmediateData":            yesNo(c.ImmediateData.or(true)),
		"MaxRecvDataSegmentLength": u(c.MaxRecvDataSegmentLength),
		"MaxBurstLength":           u(c.MaxBurstLength),
		"FirstBurstLength":         u(c.FirstBurstLength),
		"DefaultTime2Wait":         "2",
		"DefaultTime2Retain":       "0", // nothing to retain: ERL 0 never reassigns tasks
		"MaxOutstandingR2T":        u(c.MaxOutstandingR2T),
		"DataPDUInOrder":           "Yes",
		"DataSequenceInOrder":      "Yes",
		"ErrorRecoveryLevel":       "0",
		"IFMarker":                 "No",
		"OFMarker":                 "No",
	}
}

// offerOrder is the order keys go out in, as open-iscsi sends them.
var (
	normalOffer = []string{
		"HeaderDigest", "DataDigest", "MaxConnections", "InitialR2T", "ImmediateData",
		"MaxRecvDataSegmentLength", "MaxBurstLength", "FirstBurstLength", "DefaultTime2Wait",
		"DefaultTime2Retain", "MaxOutstandingR2T", "DataPDUInOrder", "DataSequenceInOrder",
		"ErrorRecoveryLevel",
	}
	// Session-wide keys are Irrelevant in a discovery session.
	discoveryOffer = []string{"HeaderDigest", "DataDigest", "MaxRecvDataSegmentLength", "DefaultTime2Wait", "DefaultTime2Retain"}
)

// negotiator tracks the operational stage: what we offered, what was
// settled, and what to answer when the target offers first.
type negotiator struct {
	local   map[string]string
	offered map[string]string // awaiting the target's answer
	extra   map[string]bool   // test keys: answers recorded, not judged
	values  map[string]string // settled outcomes
	// targetMRDSL is the target's declaration, empty if it sent none.
	targetMRDSL string
}

func newNegotiator(c *Config) *negotiator {
	return &negotiator{
		local:   localValues(c),
		offered: map[string]string{},
		extra:   map[string]bool{},
		values:  map[string]string{},
	}
}

// offer returns the keys of our first operational request, ExtraKeys
// replacing standard keys of the same name.
func (n *negotiator) offer(c *Config) []pdu.KV {
	order := normalOffer
	if c.Discovery {
		order = discoveryOffer
	}
	kvs := make([]pdu.KV, 0, len(order)+len(c.ExtraKeys))
	for _, k := range order {
		kvs = append(kvs, pdu.KV{Key: k, Value: n.local[k]})
	}
	for _, e := range c.ExtraKeys {
		n.extra[e.Key] = true
		replaced := false
		for i := range kvs {
			if kvs[i].Key == e.Key {
				kvs[i].Value, replaced = e.Value, true
			}
		}
		if !replaced {
			kvs = append(kvs, e)
		}
	}
	for _, kv := range kvs {
		// Declarations expect no answer; everything else does.
		if keyDefs[kv.Key].fn != fnDecl {
			n.offered[kv.Key] = kv.Value
		}
	}
	return kvs
}

// receive takes the target's keys from one Login Response and returns our
// answers to the keys it offered first.
func (n *negotiator) receive(kvs []pdu.KV) ([]pdu.KV, error) {
	var replies []pdu.KV
	for _, kv := range kvs {
		reply, err := n.receiveOne(kv.Key, kv.Value)
		if err != nil {
			return nil, err
		}
		if reply != "" {
			replies = append(replies, pdu.KV{Key: kv.Key, Value: reply})
		}
	}
	return replies, nil
}

func (n *negotiator) receiveOne(key, value string) (string, error) {
	if off, ok := n.offered[key]; ok {
		delete(n.offered, key)
		if n.extra[key] {
			n.values[key] = value
			return "", nil
		}
		v, err := checkAnswer(key, off, value)
		if err != nil {
			return "", err
		}
		if v != "" {
			n.values[key] = v
		}
		return "", nil
	}
	if key == "MaxRecvDataSegmentLength" {
		n.targetMRDSL = value
		return "", nil
	}
	if targetDeclarations[key] {
		n.values[key] = value
		return "", nil
	}
	if _, known := keyDefs[key]; !known {
		return notUnderstood, nil
	}
	result, err := respond(key, value, n.local[key])
	if err != nil {
		return reject, nil // an invalid offer is answered, not fatal
	}
	n.values[key] = result
	return result, nil
}

// checkAnswer validates the target's answer to our offer and returns the
// outcome, or "" when the key stays at its default. A target may only
// narrow our offer the way the key's function allows; anything else is a
// negotiation error worth failing the login for.
func checkAnswer(key, offered, answer string) (string, error) {
	switch answer {
	case notUnderstood, irrelevant, reject:
		return "", nil
	}
	def := keyDefs[key]
	bad := func(why string) error {
		return fmt.Errorf("target answered %s=%s to our %s: %s", key, answer, offered, why)
	}
	switch def.fn {
	case fnList:
		for _, v := range strings.Split(offered, ",") {
			if v == answer {
				return answer, nil
			}
		}
		return "", bad("not one of the offered values")
	case fnOr, fnAnd:
		a, ok := parseBool(answer)
		if !ok {
			return "", bad("not Yes or No")
		}
		o, _ := parseBool(offered)
		if def.fn == fnOr && o && !a || def.fn == fnAnd && !o && a {
			return "", bad("contradicts the key's boolean function")
		}
		return answer, nil
	case fnMin, fnMax:
		a, err := parseRanged(key, answer, def)
		if err != nil {
			return "", bad(err.Error())
		}
		o, _ := parseNum(offered)
		if def.fn == fnMin && a > o || def.fn == fnMax && a < o {
			return "", bad("outside what the key's min/max function allows")
		}
		return answer, nil
	}
	return answer, nil
}

// respond computes our answer to a key the target offered first: the
// outcome of the key's function applied to both values.
func respond(key, theirs, ours string) (string, error) {
	def := keyDefs[key]
	switch def.fn {
	case fnList:
		supported := strings.Split(ours, ",")
		for _, v := range strings.Split(theirs, ",") {
			for _, s := range supported {
				if v == s {
					return v, nil
				}
			}
		}
		return "", fmt.Errorf("no common value for %s", key)
	case fnOr, fnAnd:
		t, ok := parseBool(theirs)
		if !ok {
			return "", fmt.Errorf("%s=%q is not Yes or No", key, theirs)
		}
		o, _ := parseBool(ours)
		if def.fn == fnOr {
			return yesNo(t || o), nil
		}
		return yesNo(t && o), nil
	case fnMin, fnMax:
		t, err := parseRanged(key, theirs, def)
		if err != nil {
			return "", err
		}
		o, _ := parseNum(ours)
		if def.fn == fnMin {
			return strconv.FormatUint(min(t, o), 10), nil
		}
		return strconv.FormatUint(max(t, o), 10), nil
	}
	return ours, nil
}

// apply folds the settled values into p, starting from RFC defaults.
func (n *negotiator) apply(p *Params) error {
	for key, v := range n.values {
		if err := setParam(p, key, v); err != nil && !n.extra[key] {
			return err
		}
	}
	if n.targetMRDSL != "" {
		v, err := parseRanged("MaxRecvDataSegmentLength", n.targetMRDSL, keyDefs["MaxRecvDataSegmentLength"])
		if err != nil {
			return fmt.Errorf("target declared %w", err)
		}
		p.TargetMaxRecvDataSegmentLength = uint32(v)
	}
	if p.FirstBurstLength > p.MaxBurstLength {
		return fmt.Errorf("negotiated FirstBurstLength %d exceeds MaxBurstLength %d", p.FirstBurstLength, p.MaxBurstLength)
	}
	return nil
}

func setParam(p *Params, key, v string) error {
	switch key {
	case "HeaderDigest":
		p.HeaderDigest = v == "CRC32C"
		return nil
	case "DataDigest":
		p.DataDigest = v == "CRC32C"
		return nil
	case "TargetAlias":
		p.TargetAlias = v
		return nil
	case "TargetPortalGroupTag":
		tag, err := parseNum(v)
		if err != nil || tag > 65535 {
			return fmt.Errorf("TargetPortalGroupTag=%q is not a 16-bit number", v)
		}
		p.TargetPortalGroupTag = uint16(tag)
		return nil
	}
	def, ok := keyDefs[key]
	if !ok {
		return nil
	}
	if def.fn == fnOr || def.fn == fnAnd {
		b, ok := parseBool(v)
		if !ok {
			return fmt.Errorf("%s=%q is not Yes or No", key, v)
		}
		setBool(p, key, b)
		return nil
	}
	num, err := parseRanged(key, v, def)
	if err != nil {
		return err
	}
	setNum(p, key, uint32(num))
	return nil
}

func setBool(p *Params, key string, b bool) {
	switch key {
	case "InitialR2T":
		p.InitialR2T = b
	case "ImmediateData":
		p.ImmediateData = b
	case "DataPDUInOrder":
		p.DataPDUInOrder = b
	case "DataSequenceInOrder":
		p.DataSequenceInOrder = b
	}
}

func setNum(p *Params, key string, v uint32) {
	switch key {
	case "MaxConnections":
		p.MaxConnections = v
	case "MaxBurstLength":
		p.MaxBurstLength = v
	case "FirstBurstLength":
		p.FirstBurstLength = v
	case "DefaultTime2Wait":
		p.DefaultTime2Wait = v
	case "DefaultTime2Retain":
		p.DefaultTime2Retain = v
	case "MaxOutstandingR2T":
		p.MaxOutstandingR2T = v
	case "ErrorRecoveryLevel":
		p.ErrorRecoveryLevel = v
	}
}
