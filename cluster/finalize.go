package cluster

import (
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/hashicorp/memberlist"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
)

// buildFinalize raises the active cluster version to this leader's
// fsm.ClusterVersion (finalizeCommand).
func (n *Node) buildFinalize(_ *http.Request) (fsm.Command, func(any, uint64) any, error) {
	s := n.fsm.State()
	c, err := n.finalizeCommand(s)
	if err != nil {
		return nil, nil, err
	}
	render := func(_ any, gen uint64) any {
		return api.FinalizeResult{ClusterVersion: c.Version, Previous: s.ActiveVersion(), Generation: gen}
	}
	return c, render, nil
}

// finalizeCommand returns the command that raises the active cluster
// version of s to this binary's fsm.ClusterVersion; at that version or
// above already, it changes nothing, so that a retried finalize succeeds.
// Once raised, a node of an older release cannot take part any more, so
// every node that does must be seen alive running a release that supports
// the new version: the voters, and the nodes holding a replica (they serve
// a copy of a LUN even when they do not vote). A node that is down is
// behind: it could come back with the old binary. The error names the
// nodes behind.
func (n *Node) finalizeCommand(s *fsm.State) (*fsm.SetClusterVersion, error) {
	active, target := s.ActiveVersion(), fsm.ClusterVersion
	if active < target {
		if behind := n.behindVersion(s, target); len(behind) > 0 {
			return nil, &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf(
				"cannot finalize cluster version %d: these nodes do not run a release that supports it: %s; upgrade them first",
				target, strings.Join(behind, ", "))}
		}
	}
	return &fsm.SetClusterVersion{Version: max(active, target)}, nil
}

// behindVersion names, with the reason, the nodes that must support
// cluster version v before it is made active.
func (n *Node) behindVersion(s *fsm.State, v uint16) []string {
	need := map[string]bool{}
	for _, v := range n.voterNames() {
		need[v] = true
	}
	for _, d := range s.Devices {
		for _, r := range d.Replicas {
			need[r] = true
		}
	}
	members := n.members()
	var behind []string
	for name := range need {
		if why := versionLag(members[name], name == n.cfg.Name, n.protocols(), v); why != "" {
			behind = append(behind, name+" ("+why+")")
		}
	}
	sort.Strings(behind)
	return behind
}

// versionLag says why a member cannot run at cluster version v, or ""
// when it can. The leader judges itself by its own table: gossip may not
// have its metadata yet.
func versionLag(m member, self bool, own []api.ProtocolVersion, v uint16) string {
	table := m.Meta.table
	switch {
	case self:
		table = own
	case m.Name == "":
		return "not seen by gossip"
	case m.State != memberlist.StateAlive:
		return gossipState(m.State)
	case m.MetaErr != nil:
		return m.MetaErr.Error()
	}
	got, ok := channelVersion(table, ChannelCluster)
	switch {
	case !ok:
		return fmt.Sprintf("release %s predates cluster versions", strOrDefault(m.Meta.Version, "unknown"))
	case got < v:
		return fmt.Sprintf("release %s supports cluster version %d", strOrDefault(m.Meta.Version, "unknown"), got)
	}
	return ""
}
