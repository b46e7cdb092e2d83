package cluster

import (
	"net/http"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/hatarget/hatarget/cluster/pki"
)

// peersInterval is how often the set of nodes allowed on the node
// channels is recomputed besides the membership and apply events, for the
// changes no event announces (a Raft configuration entry).
const peersInterval = 500 * time.Millisecond

// peersLoop keeps the Network's member set current. The set is the union
// of the Raft configuration's servers, the nodes of the replicated state
// and the live gossip members: Raft and the state cover the nodes that are
// down or not yet re-gossiped, gossip the fresh nodes about to bootstrap
// or join (whom the gossip key admitted). Computing it here, not in the
// handshake, keeps Raft's locks out of every connection attempt.
func (n *Node) peersLoop() {
	tick := time.NewTicker(peersInterval)
	defer tick.Stop()
	for {
		n.refreshPeers()
		select {
		case <-n.stop:
			return
		case <-tick.C:
		case <-n.peersWake:
		}
	}
}

func (n *Node) refreshPeers() {
	names := map[string]struct{}{n.cfg.Name: {}}
	if n.raft != nil {
		if f := n.raft.GetConfiguration(); f.Error() == nil {
			for _, s := range f.Configuration().Servers {
				names[string(s.ID)] = struct{}{}
			}
		}
	}
	for name := range n.fsm.State().Nodes {
		names[name] = struct{}{}
	}
	if n.gossip != nil {
		for _, m := range n.gossip.list() {
			if m.State == memberlist.StateAlive || m.State == memberlist.StateSuspect {
				names[m.Name] = struct{}{}
			}
		}
	}
	n.network.setMembers(names)
}

func (n *Node) wakePeers() {
	select {
	case n.peersWake <- struct{}{}:
	default:
	}
}

// peerNode is the member node whose verified certificate the caller
// presented on the API connection: a node principal, for the routes only
// nodes may call. It reports false for operators, callers without a
// certificate, plain-TCP clusters and a node no longer a member (the
// connection may predate its removal).
func (n *Node) peerNode(r *http.Request) (name string, ok bool) {
	id, ok := pki.PeerIdentity(r.TLS)
	if !ok || id.Role != pki.RoleNode || !n.network.isMember(id.Name) {
		return "", false
	}
	return id.Name, true
}
