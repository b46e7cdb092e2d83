package scsi

import (
	"errors"
	"strconv"
	"strings"
)

// iSCSI TransportIDs (SPC-4 7.6.4.6) name initiator ports in SPEC_I_PT and
// REGISTER AND MOVE parameter lists and in READ FULL STATUS data.
//
//	byte 0:    FORMAT CODE (7:6) 00b or 01b, PROTOCOL IDENTIFIER (3:0) 5h
//	bytes 2-3: ADDITIONAL LENGTH (n-3)
//	bytes 4-n: 00b: "<iscsi name>" / 01b: "<iscsi name>,i,0x<isid>",
//	           null terminated and padded with nulls to a multiple of four

// TransportID is a decoded iSCSI TransportID: an initiator name and, for
// format 01b, the ISID as 12 lower case hex digits. Without ISID it names
// every initiator port of that name.
type TransportID struct {
	Name string `json:"name"`
	ISID string `json:"isid,omitempty"`
}

// InitiatorPort is the initiator port the TransportID names, in the form of
// Nexus.InitiatorPort, or the bare name without ISID.
func (t TransportID) InitiatorPort() string {
	if t.ISID == "" {
		return t.Name
	}
	return t.Name + initiatorPortSeparator + t.ISID
}

// TransportIDFor returns the TransportID of an initiator port (a
// Nexus.InitiatorPort, or a bare name).
func TransportIDFor(initiatorPort string) TransportID {
	if i := strings.Index(initiatorPort, initiatorPortSeparator); i >= 0 {
		return TransportID{Name: initiatorPort[:i], ISID: initiatorPort[i+len(initiatorPortSeparator):]}
	}
	return TransportID{Name: initiatorPort}
}

const (
	protocolIDiSCSI = 0x5
	maxISCSINameLen = 223 // RFC 7143 6.1
	minTransportID  = 24  // SPC-4: ADDITIONAL LENGTH is at least 20
)

var errTransportID = errors.New("scsi: invalid iSCSI TransportID")

// ParseTransportID decodes the iSCSI TransportID at the start of b and
// returns it with its length in bytes.
func ParseTransportID(b []byte) (TransportID, int, error) {
	if len(b) < 4 {
		return TransportID{}, 0, errTransportID
	}
	format, proto := b[0]>>6, b[0]&0x0f
	if proto != protocolIDiSCSI || format > 1 || b[0]&0x30 != 0 {
		return TransportID{}, 0, errTransportID
	}
	n := 4 + int(getU16(b[2:]))
	if n > len(b) || n == 4 {
		return TransportID{}, 0, errTransportID
	}
	body := b[4:n]
	if i := strings.IndexByte(string(body), 0); i >= 0 {
		body = body[:i]
	}
	s := string(body)
	var t TransportID
	if format == 0 {
		t.Name = s
	} else {
		i := indexASCIIFold(s, initiatorPortSeparator)
		if i < 0 {
			return TransportID{}, 0, errTransportID
		}
		hex := s[i+len(initiatorPortSeparator):]
		v, err := strconv.ParseUint(hex, 16, 64)
		if err != nil || len(hex) == 0 || len(hex) > 12 {
			return TransportID{}, 0, errTransportID
		}
		t.Name = s[:i]
		t.ISID = strconv.FormatUint(v|1<<48, 16)[1:] // 12 digits with leading zeros
	}
	if !validISCSIName(t.Name) {
		return TransportID{}, 0, errTransportID
	}
	t.Name = strings.ToLower(t.Name)
	return t, n, nil
}

// indexASCIIFold is strings.Index ignoring ASCII case; sep is lower case.
func indexASCIIFold(s, sep string) int {
	for i := 0; i+len(sep) <= len(s); i++ {
		j := 0
		for j < len(sep) && lowerASCII(s[i+j]) == sep[j] {
			j++
		}
		if j == len(sep) {
			return i
		}
	}
	return -1
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// validISCSIName accepts the characters iSCSI names use (RFC 3722 after
// stringprep): nothing that could break our port strings.
func validISCSIName(s string) bool {
	if s == "" || len(s) > maxISCSINameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == ',' || c == '|' {
			return false
		}
	}
	return true
}

// AppendTransportID appends the TransportID of t: format 01b with an ISID,
// 00b without.
func AppendTransportID(b []byte, t TransportID) []byte {
	s := t.InitiatorPort()
	n := (len(s) + 1 + 3) &^ 3
	if n < minTransportID-4 {
		n = minTransportID - 4
	}
	var h [4]byte
	h[0] = protocolIDiSCSI
	if t.ISID != "" {
		h[0] |= 0x40
	}
	putU16(h[2:], uint16(n))
	b = append(b, h[:]...)
	b = append(b, s...)
	for range n - len(s) {
		b = append(b, 0)
	}
	return b
}
