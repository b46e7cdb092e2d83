package iscsi

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/target/scsi"
)

const (
	ownIQN     = "iqn.2024-01.io.hatarget.test:own-portals"
	clusterIQN = "iqn.2024-01.io.hatarget.test:cluster-portals"
	testTag    = 7 // this node's portal group tag, not the default 1
)

// clusterPortals are what a cluster would configure: every node's portal
// and tag, IPv6 and host names included, none of them ours.
var clusterPortals = []Portal{
	{Addr: "192.0.2.1:3260", Tag: 1},
	{Addr: "[2001:db8::2]:3260", Tag: 2},
	{Addr: "node3.example:3261", Tag: 3},
}

// noLUNs is a View without LUNs: these tests never reach SCSI.
type noLUNs struct{}

func (noLUNs) LU(uint64) *scsi.LU { return nil }
func (noLUNs) LUNs() []uint64     { return nil }

// startPortalServer serves a target without Portals and one with the
// cluster's, on one loopback portal, with PortalGroupTag testTag.
func startPortalServer(t *testing.T) (srv *Server, addr string) {
	t.Helper()
	srv = NewServer(Options{Logger: slog.New(slog.DiscardHandler), PortalGroupTag: testTag})
	views := func(string) scsi.View { return noLUNs{} }
	srv.SetTargets([]*Target{
		{Name: ownIQN, Limits: DefaultLimits(), Views: views, RelativePort: 1, PortGroup: 1},
		{Name: clusterIQN, Limits: DefaultLimits(), Views: views, RelativePort: 1, PortGroup: 1, Portals: clusterPortals},
	}, nil)
	a := listenLoopback(t, srv)
	return srv, a.String()
}

// listenLoopback serves srv on a loopback port until the test ends.
func listenLoopback(t *testing.T, srv *Server) net.Addr {
	t.Helper()
	a, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return a
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestSendTargetsPortals checks that a target with Portals is listed with
// exactly those, in discovery and in its own normal sessions, and that one
// without lists our listening portal with our portal group tag.
func TestSendTargetsPortals(t *testing.T) {
	_, addr := startPortalServer(t)
	own := []initiator.Portal{{Addr: addr, Tag: testTag}}
	var cluster []initiator.Portal
	for _, p := range clusterPortals {
		cluster = append(cluster, initiator.Portal{Addr: p.Addr, Tag: p.Tag})
	}
	for _, tc := range []struct {
		name   string
		target string
		normal bool // ask in a normal session to the target, not in discovery
		want   []initiator.Portal
	}{
		{"discovery, own portals", ownIQN, false, own},
		{"discovery, configured portals", clusterIQN, false, cluster},
		{"normal session, own portals", ownIQN, true, own},
		{"normal session, configured portals", clusterIQN, true, cluster},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := sendTargets(t, addr, tc.target, tc.normal)
			if len(got) != 1 || got[0].Name != tc.target || !slices.Equal(got[0].Portals, tc.want) {
				t.Errorf("SendTargets lists %+v, want %s with %+v", got, tc.target, tc.want)
			}
		})
	}
}

// sendTargets asks SendTargets for one target, through a discovery session
// or a normal session to that target.
func sendTargets(t *testing.T, addr, target string, normal bool) []initiator.Target {
	t.Helper()
	ctx := testContext(t)
	if !normal {
		got, err := initiator.DiscoverTarget(ctx, addr, "", target)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	s, err := initiator.Dial(ctx, initiator.Config{Addr: addr, TargetName: target})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Logout(ctx)
	got, err := s.SendTargets(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestLoginPortalGroupTag checks that the login response carries this
// node's PortalGroupTag: multipath initiators tell the nodes' paths apart
// by it.
func TestLoginPortalGroupTag(t *testing.T) {
	_, addr := startPortalServer(t)
	ctx := testContext(t)
	s, err := initiator.Dial(ctx, initiator.Config{Addr: addr, TargetName: clusterIQN})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Logout(ctx)
	if got := s.Negotiated().TargetPortalGroupTag; got != testTag {
		t.Errorf("TargetPortalGroupTag %d, want %d", got, testTag)
	}
}
