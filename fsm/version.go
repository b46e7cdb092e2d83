package fsm

// Cluster versions (the model is CockroachDB's): the active cluster version
// lives in the state, and a feature that older binaries cannot follow (a
// command type or field, a wire message, an on-disk format) may be used only
// once the active version has reached the version that introduced it. Until
// the operator finalizes an upgrade, every node may still go back to the
// previous release; finalizing raises the active version, after which the
// previous release can no longer join.
//
//	1: v0.1.0, the release before cluster versions existed
//	2: the active cluster version itself (set_cluster_version); owners
//	   resume the replicas' dirty bitmaps they persisted; every node moves
//	   its data dir to format 2 (cluster/datadir.go), which the previous
//	   release cannot open; node records carry the node's incarnation
//
// A cluster bootstrapped by binaries that all support ClusterVersion
// starts at it: it has no older release to go back to.
const (
	// ClusterVersionBase is the cluster version of the release before
	// cluster versions existed: what a state without one reads as.
	ClusterVersionBase uint16 = 1
	// ClusterVersion is the highest cluster version this binary supports:
	// the one an upgrade to it finalizes to.
	ClusterVersion uint16 = 2
)

// ClusterVersionIncarnation is the cluster version from which node
// records carry the node's incarnation: the previous release decodes
// commands and snapshots strictly and refuses the field.
const ClusterVersionIncarnation uint16 = 2

// ClusterVersionReplicaState is the cluster version from which an owner
// resumes the dirty bitmaps it persisted (replication/persist.go) when it
// opens a replicated LUN again. Before it, the previous release may have
// run on the data dir since the files were written, writing without
// keeping them, so they are dropped and out-of-sync replicas compared in
// full, as that release does.
const ClusterVersionReplicaState uint16 = 2

// ProtocolClusterVersion is the command protocol that introduced the
// active cluster version: set_cluster_version and State.ClusterVersion.
const ProtocolClusterVersion uint16 = 5

// ActiveVersion returns the cluster version in force: ClusterVersionBase
// for a cluster that never finalized an upgrade (its state, written by a
// release without cluster versions, has none).
func (s *State) ActiveVersion() uint16 {
	return max(s.ClusterVersion, ClusterVersionBase)
}

// checkClusterVersion refuses a command type whose spec needs a higher
// active cluster version than s has: the one place that rule is applied.
func (s *State) checkClusterVersion(t CommandType) error {
	need := commands[t].ClusterVersion
	if active := s.ActiveVersion(); need > active {
		return errorf(CodeUnsupported, "%s needs cluster version %d and the cluster is at %d: finalize the upgrade first (hatarget cluster upgrade finalize)",
			t, need, active)
	}
	return nil
}

// TypeSetClusterVersion raises the active cluster version.
const TypeSetClusterVersion CommandType = "set_cluster_version"

// SetClusterVersion raises the active cluster version: the finalization of
// an upgrade. It never lowers it, since nodes may already rely on what the
// higher version allows; setting the current version again is a no-op, so
// that a retried finalize succeeds. A binary refuses a version above the
// one it supports: it cannot know what that version allows. The proposer
// must first check that every node that takes part supports Version.
type SetClusterVersion struct {
	Version uint16 `json:"version"`
}

func (*SetClusterVersion) Type() CommandType { return TypeSetClusterVersion }

func (c *SetClusterVersion) check() error {
	if c.Version < ClusterVersionBase || c.Version > ClusterVersion {
		return errorf(CodeUnsupported, "cluster version %d is not supported by this binary (it supports %d to %d)",
			c.Version, ClusterVersionBase, ClusterVersion)
	}
	return nil
}

func (c *SetClusterVersion) apply(s *State, _ Env) (any, error) {
	active := s.ActiveVersion()
	if c.Version < active {
		return nil, errorf(CodeConflict, "the cluster version is %d already and never goes down (asked for %d)", active, c.Version)
	}
	// Storing the base version would only put the field into snapshots
	// the previous release must still read.
	if c.Version > active {
		s.ClusterVersion = c.Version
	}
	return c.Version, nil
}
