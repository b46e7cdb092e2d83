// Package api holds the management API's wire types, its stable error
// codes and the Go client the CLI uses. It imports nothing of the project,
// so that the CLI and other tools depend only on the wire format.
package api

// Version is the management API version, the path prefix of every route;
// VersionNumber is the same for the protocol table. Changes within a
// version are additive (new routes, new fields), which older clients
// ignore and older servers answer with 404 or leave unset.
const (
	Version       = "v1"
	VersionNumber = 1
)

// ProtocolVersion is one channel of a binary's protocol table (`hatarget
// version`): a protocol it speaks or a format it writes.
type ProtocolVersion struct {
	// Channel names the protocol or format; docs/api.md lists them.
	Channel string `json:"channel"`
	// Version is what the binary speaks or writes; Min the oldest it still
	// accepts, equal to Version where it accepts only its own.
	Version uint16 `json:"version"`
	Min     uint16 `json:"min"`
}

// Default ports on a node's bind address.
const (
	DefaultISCSIPort  = 3260
	DefaultAPIPort    = 9260
	DefaultRaftPort   = 9261
	DefaultGossipPort = 9262
	// DefaultReplicationPort is where nodes take the writes owners of
	// replicated LUNs send to their copies.
	DefaultReplicationPort = 9263
	// DefaultForwardPort is where nodes accept SCSI commands other nodes
	// forward to the LUNs they own.
	DefaultForwardPort = 9264
)

// Headers.
const (
	// HeaderGeneration carries the configuration generation (the applied
	// Raft index) of the node that answered.
	HeaderGeneration = "X-Hatarget-Generation"
	// HeaderForwarded marks a request a follower forwarded to the leader,
	// so that it is never forwarded twice.
	HeaderForwarded = "X-Hatarget-Forwarded"
)

// Error codes: stable, for programs; Message is for people.
const (
	CodeInvalid      = "invalid"      // 400: the request is wrong
	CodeUnauthorized = "unauthorized" // 401: missing or wrong token
	CodeNotFound     = "not_found"    // 404
	CodeConflict     = "conflict"     // 409: clashes with the current state
	CodeUnsupported  = "unsupported"  // 422: some voter cannot decode it yet
	CodeNoLeader     = "no_leader"    // 503: no quorum or election running
	CodeInternal     = "internal"     // 500
	CodeUnavailable  = "unavailable"  // 503: node shutting down or not ready
	CodeTimeout      = "timeout"      // 504: not committed in time
)

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says what went wrong and what to do about it.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// NodeStatus is one node as the cluster status reports it.
type NodeStatus struct {
	Name string `json:"name"`
	// Address is the node's management API address.
	Address      string `json:"address"`
	ISCSIAddress string `json:"iscsi_address"`
	RaftAddress  string `json:"raft_address"`
	// RaftRole is leader, follower, candidate, or none when the node is
	// not a voter or did not answer.
	RaftRole string `json:"raft_role"`
	Voter    bool   `json:"voter"`
	// Healthy: memberlist sees the node alive, it answered, and it has
	// caught up with the cluster (Ready).
	Healthy bool `json:"healthy"`
	Ready   bool `json:"ready"`
	// Gossip is the memberlist state: alive, suspect, dead, left.
	Gossip   string `json:"gossip"`
	Version  string `json:"version"`
	Protocol uint16 `json:"protocol"`
	// Protocols is the node's protocol table, as it last advertised it;
	// absent for a node gossip has not seen since this node started, or
	// that runs a release from before protocol tables (v0.1.0), which
	// advertises Protocol only.
	Protocols  []ProtocolVersion `json:"protocols,omitempty"`
	PortGroup  uint16            `json:"port_group"`
	Term       uint64            `json:"term"`
	CommitIdx  uint64            `json:"commit_index"`
	Generation uint64            `json:"generation"`
	Error      string            `json:"error,omitempty"`
}

// ClusterStatus is GET /v1/status.
type ClusterStatus struct {
	Leader     string `json:"leader"`
	Term       uint64 `json:"term"`
	CommitIdx  uint64 `json:"commit_index"`
	Generation uint64 `json:"generation"`
	// ClusterVersion is the active cluster version: what every node may
	// use (docs/api.md, "Cluster versions").
	ClusterVersion uint16 `json:"cluster_version"`
	// MixedVersions: the nodes do not all run the same release with the
	// same protocol table, as in the middle of a rolling upgrade.
	MixedVersions bool         `json:"mixed_versions"`
	Nodes         []NodeStatus `json:"nodes"`
}

// LocalStatus is GET /v1/local: the answering node only, never forwarded.
// Generation is the configuration generation its dataplane serves, which
// lags the applied Raft index while a change is being applied (or could not
// be: the node's log says why).
type LocalStatus struct {
	Name       string `json:"name"`
	RaftRole   string `json:"raft_role"`
	Leader     string `json:"leader"`
	Term       uint64 `json:"term"`
	CommitIdx  uint64 `json:"commit_index"`
	Generation uint64 `json:"generation"`
	Version    string `json:"version"`
	Protocol   uint16 `json:"protocol"`
	// Protocols is the node's protocol table.
	Protocols []ProtocolVersion `json:"protocols,omitempty"`
	// Ready: the node has caught up with the cluster and serves iSCSI.
	Ready bool `json:"ready"`
	// Settling: the node leads but has not committed an entry of its term
	// yet, so its commit index is not the cluster's (a node catching up
	// asks again). Releases before it never set it.
	Settling bool `json:"settling,omitempty"`
}

// Member is one memberlist member (GET /v1/members).
type Member struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	Gossip   string `json:"gossip"`
	Version  string `json:"version"`
	Protocol uint16 `json:"protocol"`
	APIAddr  string `json:"api_address"`
	ISCSI    string `json:"iscsi_address"`
	RaftAddr string `json:"raft_address"`
	Voter    bool   `json:"voter"`
}

// TransferLeadership is POST /v1/leadership.
type TransferLeadership struct {
	// To is the node to hand leadership to; empty lets Raft choose.
	To string `json:"to,omitempty"`
}

// CreateTarget is POST /v1/targets.
type CreateTarget struct {
	IQN   string `json:"iqn"`
	Alias string `json:"alias,omitempty"`
}

// UpdateTarget is PATCH /v1/targets/{iqn}. Nil fields are unchanged; a
// parameter with an empty value is reset to its default.
type UpdateTarget struct {
	Alias   *string           `json:"alias,omitempty"`
	Enabled *bool             `json:"enabled,omitempty"`
	Params  map[string]string `json:"params,omitempty"`
}

// SetCHAP is PUT /v1/targets/{iqn}/chap. An empty User turns CHAP off.
type SetCHAP struct {
	User         string `json:"user,omitempty"`
	Secret       string `json:"secret,omitempty"`
	MutualUser   string `json:"mutual_user,omitempty"`
	MutualSecret string `json:"mutual_secret,omitempty"`
}

// ACLEntry is POST /v1/targets/{iqn}/acl.
type ACLEntry struct {
	Initiator string `json:"initiator"`
}

// Target is one target as the API shows it. Secrets are never returned.
type Target struct {
	IQN               string            `json:"iqn"`
	Alias             string            `json:"alias,omitempty"`
	Enabled           bool              `json:"enabled"`
	LUNs              []LUNMap          `json:"luns"`
	Groups            []InitiatorGroup  `json:"groups,omitempty"`
	AllowedInitiators []string          `json:"allowed_initiators"`
	CHAPUsers         []string          `json:"chap_users,omitempty"`
	MutualCHAPUser    string            `json:"mutual_chap_user,omitempty"`
	Params            map[string]string `json:"params,omitempty"`
	// Portals are the iSCSI portals of every node serving the target.
	Portals []string `json:"portals"`
}

// LUNMap is a LUN number and the LUN (device) it shows.
type LUNMap struct {
	LUN      uint64 `json:"lun"`
	Name     string `json:"name"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// InitiatorGroup is a LUN-masking group of a target.
type InitiatorGroup struct {
	Name       string   `json:"name"`
	Initiators []string `json:"initiators"`
	LUNs       []LUNMap `json:"luns"`
}

// CreateLUN is POST /v1/luns: a new LUN (device) mapped at LUN of Target.
//
// By default the LUN is replicated: Replicas nodes (when 0, three, or every
// node of a smaller cluster) each keep a copy of Size bytes under their
// storage directory, or at Path (an existing file or device there is used).
// With Shared the storage is the file or device at Path that every node
// reaches: a new sparse file with Size, an existing one without. The
// nullio handler stores nothing and is neither.
type CreateLUN struct {
	Target    string `json:"target"`
	LUN       uint64 `json:"lun"`
	Name      string `json:"name"`
	Size      int64  `json:"size,omitempty"`
	Path      string `json:"path,omitempty"`
	Handler   string `json:"handler,omitempty"`
	BlockSize uint32 `json:"block_size,omitempty"`
	Thin      bool   `json:"thin,omitempty"`
	ReadOnly  bool   `json:"read_only,omitempty"`
	NVCache   bool   `json:"nv_cache,omitempty"`
	// NonOwner is the ALUA state of the paths through nodes other than the
	// owner: NonOwnerActive (default) or NonOwnerStandby.
	NonOwner string `json:"non_owner,omitempty"`
	// Replicas is how many nodes keep a synchronous copy, from 1 to the
	// number of nodes; 0 lets the cluster choose (three, or every node of
	// a smaller cluster).
	Replicas int `json:"replicas,omitempty"`
	// Shared puts the LUN on storage every node reaches at Path, not
	// replicated; it excludes Replicas.
	Shared bool `json:"shared,omitempty"`
}

// Non-owner path policies.
const (
	NonOwnerActive  = "active"
	NonOwnerStandby = "standby"
)

// Move is POST /v1/luns/{name}/move: make To the LUN's owner.
type Move struct {
	To string `json:"to"`
}

// ReplaceReplica is POST /v1/luns/{name}/replace-replica: New, a node
// holding no copy, takes the place of replica Old (not the owner). New
// starts out of sync; the owner resyncs it.
type ReplaceReplica struct {
	Old string `json:"old"`
	New string `json:"new"`
}

// ForcePromote is POST /v1/luns/{name}/force-promote: make To, a live
// replica that is not in sync, the owner of a replicated LUN none of whose
// in-sync replicas is alive. Writes acknowledged after To's copy fell out
// of sync are lost. DryRun checks the promotion and says what it would
// override, changing nothing.
type ForcePromote struct {
	To     string `json:"to"`
	DryRun bool   `json:"dry_run,omitempty"`
}

// ForcePromoteResult is the answer of POST /v1/luns/{name}/force-promote.
type ForcePromoteResult struct {
	// LUN is the LUN after the promotion, or as it is for a dry run.
	LUN LUN `json:"lun"`
	// Overridden are the in-sync replicas (none of them alive) whose
	// copies may hold writes the new owner's lacks; they stay replicas,
	// out of sync.
	Overridden []string `json:"overridden"`
	DryRun     bool     `json:"dry_run,omitempty"`
	// Generation holds the promotion; zero for a dry run.
	Generation uint64 `json:"generation,omitempty"`
}

// Drain is the optional body of POST /v1/nodes/{name}/drain.
type Drain struct {
	// Force drains the node even when stopping it would make a LUN
	// unavailable or cost Raft its quorum (StopSafety.Blocked), which is
	// otherwise refused.
	Force bool `json:"force,omitempty"`
}

// DrainResult is the answer of POST /v1/nodes/{name}/drain: the LUNs moved
// away from the node and where they went.
type DrainResult struct {
	Moved map[string]string `json:"moved"`
	// Kept are the LUNs the node still owns because no other node can own
	// them yet: their other copies are out of sync (StopSafety says why).
	Kept []string `json:"kept,omitempty"`
	// Leader is the node the drained node handed Raft leadership to, when
	// it led.
	Leader     string `json:"leader,omitempty"`
	Generation uint64 `json:"generation"`
}

// StopSafety is GET /v1/nodes/{name}/safety: whether stopping the node now
// loses nothing.
type StopSafety struct {
	Node string `json:"node"`
	// Safe: without the node Raft keeps a quorum of its voters, and no LUN
	// loses its owner or its last live in-sync copy. Reasons say, naming
	// the LUN, why not.
	Safe    bool     `json:"safe"`
	Reasons []string `json:"reasons,omitempty"`
	// Blocked: some reason does not go away by draining or by waiting for
	// a running resync; stopping the node would make a LUN unavailable or
	// cost the quorum. Drain refuses such a node unless forced.
	Blocked bool `json:"blocked,omitempty"`
	// Idle: the node is drained, does not lead Raft and owns no LUN
	// another node could take over, so stopping it moves nothing a drain
	// could have moved first; Pending says what is left.
	Idle    bool     `json:"idle"`
	Pending []string `json:"pending,omitempty"`
}

// Stoppable reports whether the node may be stopped now without moving
// anything or losing anything.
func (s *StopSafety) Stoppable() bool { return s.Safe && s.Idle }

// Rebalance is POST /v1/rebalance.
type Rebalance struct {
	// DryRun answers the plan without moving anything.
	DryRun bool `json:"dry_run,omitempty"`
}

// LUNMove is one ownership change of a rebalance.
type LUNMove struct {
	LUN  string `json:"lun"`
	From string `json:"from"`
	To   string `json:"to"`
}

// RebalanceResult is the answer of POST /v1/rebalance: the moves made (or
// planned, for a dry run), by LUN name.
type RebalanceResult struct {
	Moves  []LUNMove `json:"moves"`
	DryRun bool      `json:"dry_run,omitempty"`
	// Generation holds the last move; zero when nothing moved.
	Generation uint64 `json:"generation,omitempty"`
}

// Resize is POST /v1/luns/{name}/resize.
type Resize struct {
	Size int64 `json:"size"`
}

// LUN is one LUN (device) as the API shows it.
type LUN struct {
	Name         string `json:"name"`
	Handler      string `json:"handler"`
	Path         string `json:"path,omitempty"`
	Size         int64  `json:"size"`
	BlockSize    uint32 `json:"block_size"`
	ReadOnly     bool   `json:"read_only,omitempty"`
	NVCache      bool   `json:"nv_cache,omitempty"`
	WriteThrough bool   `json:"write_through,omitempty"`
	Thin         bool   `json:"thin,omitempty"`
	Removable    bool   `json:"removable,omitempty"`
	Serial       string `json:"serial"`
	NAA          string `json:"naa"`
	// Owner is the node whose port group is active/optimized for the LUN;
	// Epoch counts its ownership changes.
	Owner    string    `json:"owner,omitempty"`
	Epoch    uint64    `json:"epoch,omitempty"`
	NonOwner string    `json:"non_owner"`
	Mappings []Mapping `json:"mappings"`
	// Replicas lists the nodes holding a copy of a replicated LUN; empty
	// on shared storage.
	Replicas []Replica `json:"replicas,omitempty"`
	// ResyncUnavailable says why this view lacks the resync progress of
	// replicas that are out of sync: only the owner knows it, and it is
	// down or did not answer the node that made the view. Their state is
	// then the one Raft knows (out-of-sync, never resyncing).
	ResyncUnavailable string `json:"resync_unavailable,omitempty"`
}

// Replica is one copy of a replicated LUN.
type Replica struct {
	Node string `json:"node"`
	// State: in-sync, out-of-sync (missed writes, waiting for a
	// resync), resyncing (the owner is bringing it up to date) or down
	// (gossip sees the node gone).
	State string `json:"state"`
	Owner bool   `json:"owner,omitempty"`
	// ResyncDone and ResyncTotal are the progress, in bytes, of the
	// resync an out-of-sync replica is getting from the owner; both are
	// absent when none runs (or the view has no progress to show). Done
	// counts the bytes the current attempt copied or compared, Total adds
	// those still to do; both restart with each attempt.
	ResyncDone  int64 `json:"resync_done,omitempty"`
	ResyncTotal int64 `json:"resync_total,omitempty"`
	// ResyncPhase is the resync's phase (sealing, copying, comparing,
	// readmitting, retrying); ResyncError why its last attempt failed.
	ResyncPhase string `json:"resync_phase,omitempty"`
	ResyncError string `json:"resync_error,omitempty"`
}

// ResyncStatus is GET /v1/internal/resync[?lun=NAME...], a node's own
// account of the resyncs it runs: for every LUN asked (every LUN without
// lun) that it owns in its own view, the progress by replica node, empty
// when it runs none. Nodes ask the owner of a LUN for it to show the
// progress of its replicas in their views.
type ResyncStatus map[string]map[string]ResyncProgress

// ResyncProgress is where the resync of one replica stands (see Replica).
type ResyncProgress struct {
	Done  int64  `json:"done"`
	Total int64  `json:"total"`
	Phase string `json:"phase"`
	Error string `json:"error,omitempty"`
}

// Replica states.
const (
	ReplicaInSync    = "in-sync"
	ReplicaOutOfSync = "out-of-sync"
	ReplicaResyncing = "resyncing"
	ReplicaDown      = "down"
)

// Mapping is one place a LUN is mapped.
type Mapping struct {
	Target   string `json:"target"`
	Group    string `json:"group,omitempty"`
	LUN      uint64 `json:"lun"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// ImportResult is the answer of POST /v1/import/scst.
type ImportResult struct {
	Devices    []string `json:"devices"`
	Targets    []string `json:"targets"`
	Warnings   []string `json:"warnings,omitempty"`
	Generation uint64   `json:"generation"`
}

// Result is the answer of a write without a more specific body: the
// generation that holds the change.
type Result struct {
	Generation uint64 `json:"generation"`
}
