package cluster

import (
	"encoding/json"
	"fmt"
)

// metaVersion is the version of the memberlist metadata encoding.
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
	return m, nil
}
