package cluster

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/hatarget/hatarget/cluster/api"
)

// metaVersion is the version of the memberlist metadata encoding. Adding a
// field keeps it: decoders ignore fields they do not know, so the nodes of
// an older release read a newer node's metadata. Only a change an older
// decoder would misread (a field changing meaning or type) raises it, and
// the new release must keep decoding the old version until it is finalized.
const metaVersion = 1

// Meta is what a node gossips about itself: enough to join it to Raft,
// reach its API, and gate commands on the protocol it decodes.
type Meta struct {
	V int `json:"v"`
	// Version is the release; Protocol the highest fsm command protocol.
	Version  string `json:"ver"`
	Protocol uint16 `json:"proto"`
	ISCSI    string `json:"iscsi"`
	API      string `json:"api"`
	Raft     string `json:"raft"`
	// Fwd is where the node accepts forwarded SCSI commands for the LUNs
	// it owns.
	Fwd string `json:"fwd,omitempty"`
	// Repl is where the node's replication server takes the writes of
	// replicated LUNs' owners.
	Repl string `json:"repl,omitempty"`
	// BootstrapExpect is the node's --bootstrap-expect; Bootstrapped says
	// it already holds Raft state, so no new cluster may be formed with it.
	BootstrapExpect int  `json:"expect,omitempty"`
	Bootstrapped    bool `json:"boot,omitempty"`
	// Inc is the node's incarnation (incarnation.go); nodes of v0.1.0
	// advertise none.
	Inc string `json:"inc,omitempty"`
	// Protocols is the node's protocol table (ProtocolTable) in the form
	// of FormatProtocols; nodes of v0.1.0 advertise none.
	Protocols string `json:"pt,omitempty"`
	// table is Protocols decoded.
	table []api.ProtocolVersion
}

// setProtocols puts a protocol table into the metadata.
func (m *Meta) setProtocols(t []api.ProtocolVersion) {
	m.Protocols, m.table = FormatProtocols(t), t
}

// FormatProtocols writes a protocol table in few bytes, as the metadata
// must fit memberlist's limit, and on one line for people: space-separated
// channel=version, or channel=min-version where older versions are
// accepted, as in "cluster=1-2 cmd=1-5 snap=1".
func FormatProtocols(t []api.ProtocolVersion) string {
	var b strings.Builder
	for i, p := range t {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(p.Channel)
		b.WriteByte('=')
		if p.Min != p.Version {
			fmt.Fprintf(&b, "%d-", p.Min)
		}
		fmt.Fprintf(&b, "%d", p.Version)
	}
	return b.String()
}

// parseProtocols reads what FormatProtocols wrote, in ProtocolTable's
// order; nil for an empty string.
func parseProtocols(s string) ([]api.ProtocolVersion, error) {
	var t []api.ProtocolVersion
	seen := map[string]bool{}
	for _, field := range strings.Fields(s) {
		ch, spec, ok := strings.Cut(field, "=")
		if !ok || ch == "" {
			return nil, fmt.Errorf("protocol %q is not channel=version", field)
		}
		if seen[ch] {
			return nil, fmt.Errorf("protocol %q listed twice", ch)
		}
		seen[ch] = true
		lo, hi, ranged := strings.Cut(spec, "-")
		if !ranged {
			hi = lo
		}
		v, err := strconv.ParseUint(hi, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("protocol %q: version: %w", ch, err)
		}
		oldest, err := strconv.ParseUint(lo, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("protocol %q: oldest version: %w", ch, err)
		}
		if oldest > v {
			return nil, fmt.Errorf("protocol %q accepts from version %d but speaks %d", ch, oldest, v)
		}
		t = append(t, api.ProtocolVersion{Channel: ch, Version: uint16(v), Min: uint16(oldest)})
	}
	sortProtocols(t)
	return t, nil
}

// memberlist allows at most 512 bytes of metadata per node.
const maxMetaSize = 512

func (m Meta) encode() ([]byte, error) {
	m.V = metaVersion
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > maxMetaSize {
		return nil, fmt.Errorf("node metadata is %d bytes, memberlist allows %d", len(b), maxMetaSize)
	}
	return b, nil
}

// decodeMeta reads another node's metadata. Unknown fields are allowed:
// newer nodes may gossip more, and the fields this binary reads keep their
// meaning across metadata versions of the same major.
func decodeMeta(b []byte) (Meta, error) {
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, fmt.Errorf("node metadata: %w", err)
	}
	if m.V != metaVersion {
		return Meta{}, fmt.Errorf("node metadata version %d is not supported (this binary reads %d)", m.V, metaVersion)
	}
	t, err := parseProtocols(m.Protocols)
	if err != nil {
		return Meta{}, fmt.Errorf("node metadata: %w", err)
	}
	m.table = t
	return m, nil
}
