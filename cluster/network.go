package cluster

import (
	"context"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// Network is the one way nodes listen for and dial each other: Raft, the
// leader forwarding of API calls and, later, I/O forwarding and
// replication all go through it, so that transport security and peer
// checks live in one place.
type Network struct {
	dialer net.Dialer
}

// NewNetwork returns plain TCP node networking.
func NewNetwork() *Network {
	return &Network{dialer: net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}}
}

// Listen opens a node channel listener on addr.
func (n *Network) Listen(addr string) (net.Listener, error) {
	return net.Listen("tcp", addr)
}

// DialContext opens a node channel connection to addr.
func (n *Network) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return n.dialer.DialContext(ctx, network, addr)
}

// raftStream adapts a Network listener to raft.StreamLayer.
type raftStream struct {
	net.Listener
	network   *Network
	advertise net.Addr
}

func (s *raftStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.network.DialContext(ctx, "tcp", string(addr))
}

// Addr is the address peers dial, not the wildcard the listener may use.
func (s *raftStream) Addr() net.Addr { return s.advertise }
