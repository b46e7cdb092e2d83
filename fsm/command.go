package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
)

// Protocol is the highest command protocol this binary decodes. Raise it
// when adding a command type or a field, and set the new type's Since.
//
//	1: nodes, targets, LUNs, ACLs, CHAP, resize, reservations, restore
//	2: import (a whole scst.conf as one entry)
//	3: LUN ownership (set_owner) and node drain (set_drain)
//	4: synchronous replication: a device's replicas and in-sync set
//	   (fields of create_lun, import and restore), set_owner's drop,
//	   set_in_sync, replace_replica and force_promote
//	5: the active cluster version (set_cluster_version, and the state's
//	   cluster_version, also in restore)
//	6: API tokens (bootstrap_tokens, create_token, revoke_token, and the
//	   state's tokens, also in restore)
const Protocol uint16 = 6

// ProtocolReplication is the protocol that introduced synchronous
// replication. Besides its new command types, it added optional fields to
// older ones (Device.Replicas and Device.InSync, SetOwner.Drop), which an
// older node's strict decoding refuses: gate proposals with CheckCommand,
// which sees those fields, rather than CheckDecodable on the type alone.
const ProtocolReplication uint16 = 4

// encodingVersion is the first byte of every encoded command; a different
// framing would get a new value.
const encodingVersion byte = 1

// CommandType names a command on the wire.
type CommandType string

// Command is one change of the replicated state.
type Command interface {
	Type() CommandType
	// check validates the command on its own, without the state.
	check() error
	// apply changes next, a fresh copy of the state for this command.
	apply(next *State, env Env) (any, error)
}

// CommandSpec describes a command type for decoding and version gating.
type CommandSpec struct {
	// Since is the protocol version that introduced the type: a node
	// advertising an older protocol cannot decode it.
	Since uint16
	// ClusterVersion, when set, is the active cluster version the type
	// needs (version.go): below it, nodes may still go back to a release
	// that cannot decode it, so Apply refuses it on every node alike.
	ClusterVersion uint16
	new            func() Command
}

// commands is every command type this binary knows.
var commands = map[CommandType]CommandSpec{
	TypeRegisterNode: {Since: 1, new: func() Command { return &RegisterNode{} }},
	TypeRemoveNode:   {Since: 1, new: func() Command { return &RemoveNode{} }},
	TypeCreateTarget: {Since: 1, new: func() Command { return &CreateTarget{} }},
	TypeDeleteTarget: {Since: 1, new: func() Command { return &DeleteTarget{} }},
	TypeSetTarget:    {Since: 1, new: func() Command { return &SetTarget{} }},
	TypeSetCHAP:      {Since: 1, new: func() Command { return &SetCHAP{} }},
	TypeSetACL:       {Since: 1, new: func() Command { return &SetACL{} }},
	TypeCreateLUN:    {Since: 1, new: func() Command { return &CreateLUN{} }},
	TypeDeleteLUN:    {Since: 1, new: func() Command { return &DeleteLUN{} }},
	TypeResizeDevice: {Since: 1, new: func() Command { return &ResizeDevice{} }},
	TypeReservation:  {Since: 1, new: func() Command { return &Reservation{} }},
	TypeRestore:      {Since: 1, new: func() Command { return &Restore{} }},
	TypeImport:       {Since: 2, new: func() Command { return &Import{} }},
	TypeSetOwner:     {Since: 3, new: func() Command { return &SetOwner{} }},
	TypeSetDrain:     {Since: 3, new: func() Command { return &SetDrain{} }},

	TypeSetInSync:      {Since: ProtocolReplication, new: func() Command { return &SetInSync{} }},
	TypeReplaceReplica: {Since: ProtocolReplication, new: func() Command { return &ReplaceReplica{} }},
	TypeForcePromote:   {Since: ProtocolReplication, new: func() Command { return &ForcePromote{} }},

	TypeSetClusterVersion: {Since: ProtocolClusterVersion, new: func() Command { return &SetClusterVersion{} }},

	TypeBootstrapTokens: {Since: ProtocolTokens, ClusterVersion: ClusterVersionTokens, new: func() Command { return &BootstrapTokens{} }},
	TypeCreateToken:     {Since: ProtocolTokens, ClusterVersion: ClusterVersionTokens, new: func() Command { return &CreateToken{} }},
	TypeRevokeToken:     {Since: ProtocolTokens, ClusterVersion: ClusterVersionTokens, new: func() Command { return &RevokeToken{} }},
}

// Spec returns the description of a command type.
func Spec(t CommandType) (CommandSpec, bool) {
	s, ok := commands[t]
	return s, ok
}

// envelope is the encoded form: the type and the type's own body.
type envelope struct {
	Type CommandType     `json:"type"`
	Body json.RawMessage `json:"body"`
}

// Encode serialises a command for the Raft log.
func Encode(c Command) ([]byte, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("fsm: encoding %s: %w", c.Type(), err)
	}
	env, err := json.Marshal(envelope{Type: c.Type(), Body: body})
	if err != nil {
		return nil, fmt.Errorf("fsm: encoding %s: %w", c.Type(), err)
	}
	return append([]byte{encodingVersion}, env...), nil
}

// Decode parses an encoded command strictly: an unknown encoding, command
// type or field is a CodeUnsupported error.
func Decode(b []byte) (Command, error) {
	if len(b) == 0 || b[0] != encodingVersion {
		return nil, errorf(CodeUnsupported, "command encoding %v is not supported by this binary (it speaks %d)", firstByte(b), encodingVersion)
	}
	var env envelope
	if err := DecodeStrict(b[1:], &env); err != nil {
		return nil, errorf(CodeUnsupported, "decoding command: %v", err)
	}
	spec, ok := commands[env.Type]
	if !ok {
		return nil, errorf(CodeUnsupported, "unknown command type %q: this binary speaks protocol %d", env.Type, Protocol)
	}
	c := spec.new()
	if err := DecodeStrict(env.Body, c); err != nil {
		return nil, errorf(CodeUnsupported, "decoding %s: %v", env.Type, err)
	}
	return c, nil
}

func firstByte(b []byte) any {
	if len(b) == 0 {
		return "(empty)"
	}
	return b[0]
}

// DecodeStrict decodes one JSON value, refusing unknown fields and
// trailing data.
func DecodeStrict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	// More misses a stray '}' or ']'; only the end of input may follow.
	if _, err := d.Token(); err != io.EOF {
		return fmt.Errorf("trailing data after the JSON value")
	}
	return nil
}

// Peer is a voter as the version gate sees it.
type Peer struct {
	Name     string
	Protocol uint16
}

// CheckDecodable refuses a command type that one of peers could not
// decode, naming the nodes that must be upgraded first. It knows the type
// only: a command of an older type can still carry a newer field, which
// CheckCommand sees.
func CheckDecodable(t CommandType, peers []Peer) error {
	spec, ok := commands[t]
	if !ok {
		return errorf(CodeUnsupported, "unknown command type %q", t)
	}
	return checkPeers(string(t), spec.Since, peers)
}

// fieldGated is a command with optional fields added after its type: it
// reports the protocol its fields as set need (0 when none is set).
type fieldGated interface {
	fieldsSince() uint16
}

// RequiredProtocol returns the lowest protocol that decodes c as it is:
// its type's Since, or later when it carries a field added since (replicas
// of a device in create_lun, import or restore; drop in set_owner; the
// cluster version of a restored state).
func RequiredProtocol(c Command) uint16 {
	need := commands[c.Type()].Since
	if g, ok := c.(fieldGated); ok {
		need = max(need, g.fieldsSince())
	}
	return need
}

// CheckCommand refuses a command that one of peers could not decode,
// fields included, naming the nodes that must be upgraded first. The
// proposer should call it rather than CheckDecodable(c.Type(), peers).
func CheckCommand(c Command, peers []Peer) error {
	spec, ok := commands[c.Type()]
	if !ok {
		return errorf(CodeUnsupported, "unknown command type %q", c.Type())
	}
	need := RequiredProtocol(c)
	what := string(c.Type())
	if need > spec.Since {
		what += " with " + fieldFeatures[need] + " fields"
	}
	return checkPeers(what, need, peers)
}

// fieldFeatures names, for refusals, the feature of each protocol that
// added fields to older command types.
var fieldFeatures = map[uint16]string{
	ProtocolReplication:    "replication",
	ProtocolClusterVersion: "cluster version",
	ProtocolTokens:         "token",
}

func checkPeers(what string, need uint16, peers []Peer) error {
	var behind []string
	for _, p := range peers {
		if p.Protocol < need {
			behind = append(behind, fmt.Sprintf("%s (protocol %d)", p.Name, p.Protocol))
		}
	}
	if len(behind) == 0 {
		return nil
	}
	sort.Strings(behind)
	return errorf(CodeUnsupported, "%s needs command protocol %d, which these voters cannot decode yet: %v; upgrade them first",
		what, need, behind)
}

// Env is what Apply needs beyond the state: pure functions supplied by the
// caller.
type Env struct {
	Reservations ReservationMachine
}

// ReservationMachine applies one reservation operation to a device's
// serialised reservation state. It must be deterministic: every node runs
// it on the same inputs.
type ReservationMachine interface {
	Apply(state, op []byte) (next, outcome []byte, err error)
}

// Apply runs an encoded Raft entry at index against s. It returns the new
// state (s with only Index changed when the command is refused), the
// command's result and its error. Apply never panics on bad input: a
// command that does not decode is refused like an invalid one.
func (s *State) Apply(index uint64, entry []byte, env Env) (*State, any, error) {
	c, err := Decode(entry)
	if err != nil {
		return s.WithIndex(index), nil, err
	}
	return s.ApplyCommand(index, c, env)
}

// ApplyCommand is Apply for a decoded command.
func (s *State) ApplyCommand(index uint64, c Command, env Env) (*State, any, error) {
	if err := c.check(); err != nil {
		return s.WithIndex(index), nil, err
	}
	if err := s.checkClusterVersion(c.Type()); err != nil {
		return s.WithIndex(index), nil, err
	}
	next := s.next()
	next.Index = index
	res, err := c.apply(next, env)
	if err != nil {
		return s.WithIndex(index), nil, err
	}
	return next, res, nil
}

// WithIndex returns s with Index set, sharing everything else: the state
// after a refused command.
func (s *State) WithIndex(index uint64) *State {
	n := *s
	n.Index = index
	return &n
}
