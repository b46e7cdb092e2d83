package cluster

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/hashicorp/raft"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
	htrp "github.com/hatarget/hatarget/replication"
	"github.com/hatarget/hatarget/target/forward"
	"github.com/hatarget/hatarget/target/scsi"
)

// Channels of the protocol table. The names are short because every node
// gossips its table within memberlist's 512 bytes of metadata, and stable
// because scripts and other releases read them.
const (
	ChannelCluster      = "cluster"
	ChannelCommands     = "cmd"
	ChannelSnapshot     = "snap"
	ChannelRaft         = "raft"
	ChannelRaftStore    = "raftdb"
	ChannelMeta         = "meta"
	ChannelAPI          = "api"
	ChannelForward      = "fwd"
	ChannelReplication  = "repl"
	ChannelReplicaState = "bitmap"
	ChannelActivityLog  = "actlog"
	ChannelReservations = "pr"
)

// The layouts of the data directory (datadir.go), which DataDir/format.json
// records. 1 is v0.1.0's, unmarked: raft-boltdb v2's raft/raft.db (log and
// stable store) beside raft's file snapshot store. 2 moves the store to
// raft/store.db and leaves a directory at raft/raft.db, on which v0.1.0
// fails before writing anything; a node migrates to it once the cluster is
// finalized at cluster version 2. This binary opens both, so that until
// that point of no return the previous release can still take the
// directory back. A new layout must raise raftStoreFormat and migrate
// explicitly.
const (
	minRaftStoreFormat = 1
	raftStoreFormat    = 2
)

// minCommandProtocol is the oldest command protocol whose entries this
// binary applies: no command type is ever retired, so the log of any
// earlier release replays.
const minCommandProtocol = 1

// channelDescriptions says, for people, what each channel is.
var channelDescriptions = map[string]string{
	ChannelCluster:      "cluster versions it can run at (active version: cluster status)",
	ChannelCommands:     "Raft commands (fsm protocol)",
	ChannelSnapshot:     "FSM snapshot format (Raft snapshots, cluster snapshot save)",
	ChannelRaft:         "Raft RPC protocol (hashicorp/raft)",
	ChannelRaftStore:    "data directory layout (format.json: raft-boltdb v2 store, file snapshots)",
	ChannelMeta:         "memberlist metadata encoding",
	ChannelAPI:          "management API (/" + api.Version + ")",
	ChannelForward:      "node-to-node SCSI command forwarding (" + forward.Magic + ")",
	ChannelReplication:  "synchronous replication (" + htrp.Magic + ")",
	ChannelReplicaState: "replica state file: persisted dirty bitmap",
	ChannelActivityLog:  "replication activity log file",
	ChannelReservations: "reservation state (Raft state and APTPL files)",
}

// DescribeChannel returns what a channel of the protocol table is, or ""
// for a channel this binary does not know (a newer node's).
func DescribeChannel(channel string) string { return channelDescriptions[channel] }

// ProtocolTable lists, for each channel, the version this binary speaks or
// writes and the oldest it still accepts.
func ProtocolTable() []api.ProtocolVersion { return protocolTable(fsm.Protocol) }

// protocols is the table this node advertises.
func (n *Node) protocols() []api.ProtocolVersion { return protocolTable(n.cfg.Protocol) }

// protocolTable is ProtocolTable advertising commands as the command
// protocol (Config.Protocol, lowered only to test the version gate).
func protocolTable(commands uint16) []api.ProtocolVersion {
	only := func(channel string, v uint16) api.ProtocolVersion {
		return api.ProtocolVersion{Channel: channel, Version: v, Min: v}
	}
	clusterVersion := fsm.ClusterVersion
	if commands < fsm.ProtocolClusterVersion {
		// A node posing as a release that cannot decode
		// set_cluster_version cannot run at a higher cluster version.
		clusterVersion = fsm.ClusterVersionBase
	}
	return []api.ProtocolVersion{
		{Channel: ChannelCluster, Version: clusterVersion, Min: fsm.ClusterVersionBase},
		{Channel: ChannelCommands, Version: commands, Min: minCommandProtocol},
		only(ChannelSnapshot, fsm.SnapshotFormat),
		only(ChannelRaft, raft.ProtocolVersionMax),
		{Channel: ChannelRaftStore, Version: raftStoreFormat, Min: minRaftStoreFormat},
		only(ChannelMeta, metaVersion),
		only(ChannelAPI, api.VersionNumber),
		only(ChannelForward, forward.Version),
		only(ChannelReplication, htrp.Version),
		only(ChannelReplicaState, htrp.StateVersion),
		only(ChannelActivityLog, htrp.ActivityLogVersion),
		only(ChannelReservations, scsi.PRStateVersion),
	}
}

// channelOrder is the position of each channel this binary knows in its
// table, so that other nodes' tables print in the same order.
var channelOrder = func() map[string]int {
	order := map[string]int{}
	for i, p := range ProtocolTable() {
		order[p.Channel] = i
	}
	return order
}()

// sortProtocols orders a table as ProtocolTable does, with channels this
// binary does not know last, by name.
func sortProtocols(t []api.ProtocolVersion) {
	slices.SortFunc(t, func(a, b api.ProtocolVersion) int {
		ia, aKnown := channelOrder[a.Channel]
		ib, bKnown := channelOrder[b.Channel]
		switch {
		case aKnown && bKnown:
			return cmp.Compare(ia, ib)
		case aKnown != bKnown:
			if aKnown {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Channel, b.Channel)
	})
}

// channelVersion returns the version a table gives a channel, and whether
// it has the channel.
func channelVersion(t []api.ProtocolVersion, channel string) (uint16, bool) {
	for _, p := range t {
		if p.Channel == channel {
			return p.Version, true
		}
	}
	return 0, false
}

// MixedVersions reports whether the nodes of a status run more than one
// release or protocol table. A node whose table is unknown counts by its
// release only.
func MixedVersions(rows []api.NodeStatus) bool {
	releases, tables := map[string]bool{}, map[string]bool{}
	for _, r := range rows {
		if r.Version != "" {
			releases[r.Version] = true
		}
		if r.Protocols != nil {
			tables[fmt.Sprint(r.Protocols)] = true
		}
	}
	return len(releases) > 1 || len(tables) > 1
}
