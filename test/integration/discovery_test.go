package integration

import (
	"net"
	"slices"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/target/iscsi/pdu"
	"github.com/hatarget/hatarget/test/nodetest"
)

const (
	discAIQN   = "iqn.2024-01.io.hatarget:disc-a"
	discBIQN   = "iqn.2024-01.io.hatarget:disc-b"
	discOffIQN = "iqn.2024-01.io.hatarget:disc-off"
)

func discoveryConf(disks map[string]string) string {
	return handlerBlock(disks, "disk01", "disk02") + `
TARGET_DRIVER iscsi {
    enabled 1
    TARGET ` + discAIQN + ` {
        LUN 0 disk01
        enabled 1
    }
    TARGET ` + discOffIQN + ` {
        LUN 0 disk02
        enabled 0
    }
    TARGET ` + discBIQN + ` {
        LUN 0 disk02
        enabled 1
    }
}
`
}

// TestDiscoverySendTargets checks SendTargets=All on a node with two
// portals: every enabled target is listed with both portals and the portal
// group tag, the disabled one is neither listed nor served, and both
// portals accept logins.
func TestDiscoverySendTargets(t *testing.T) {
	t.Parallel()
	if !canListen("127.0.0.2") {
		t.Skip("127.0.0.2 is not a local address here: two-portal discovery NOT tested")
	}
	disks := makeDisks(t, "disk01", "disk02")
	n := nodetest.Start(t, discoveryConf(disks), nodetest.Options{Hosts: []string{"127.0.0.1", "127.0.0.2"}})
	ctx := testCtx(t, 60*time.Second)

	want := []initiator.Portal{{Addr: n.Addrs[0], Tag: 1}, {Addr: n.Addrs[1], Tag: 1}}
	for _, via := range n.Addrs {
		t.Run("via "+via, func(t *testing.T) {
			targets, err := initiator.Discover(ctx, via, "iqn.2024-01.io.hatarget:disc")
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, tg := range targets {
				names = append(names, tg.Name)
				got := slices.Clone(tg.Portals)
				slices.SortFunc(got, func(a, b initiator.Portal) int {
					if a.Addr < b.Addr {
						return -1
					}
					if a.Addr > b.Addr {
						return 1
					}
					return 0
				})
				if !slices.Equal(got, want) {
					t.Errorf("%s portals %+v, want %+v", tg.Name, tg.Portals, want)
				}
			}
			if !slices.Equal(names, []string{discAIQN, discBIQN}) {
				t.Errorf("SendTargets=All lists %v, want %v", names, []string{discAIQN, discBIQN})
			}

			// SendTargets=<name> answers for that target only.
			one, err := initiator.DiscoverTarget(ctx, via, "iqn.2024-01.io.hatarget:disc", discBIQN)
			if err != nil {
				t.Fatal(err)
			}
			if len(one) != 1 || one[0].Name != discBIQN {
				t.Errorf("SendTargets=%s: %+v", discBIQN, one)
			}
			if off, err := initiator.DiscoverTarget(ctx, via, "iqn.2024-01.io.hatarget:disc", discOffIQN); err != nil || len(off) != 0 {
				t.Errorf("SendTargets=%s (disabled): %+v, %v", discOffIQN, off, err)
			}
		})
	}

	// Each listed portal serves the listed targets.
	for _, p := range want {
		for _, name := range []string{discAIQN, discBIQN} {
			s := dial(t, ctx, initiator.Config{Addr: p.Addr, TargetName: name})
			if err := s.TestUnitReady(ctx, 0); err != nil {
				t.Errorf("%s via %s: %v", name, p.Addr, err)
			}
			// In a normal session SendTargets reports only its own target.
			own, err := s.SendTargets(ctx, "All")
			if err != nil || len(own) != 1 || own[0].Name != name {
				t.Errorf("SendTargets=All in a session to %s: %+v, %v", name, own, err)
			}
			if err := s.Logout(ctx); err != nil {
				t.Error(err)
			}
		}
	}

	// The disabled target does not exist as far as logins go.
	_, err := initiator.Dial(ctx, initiator.Config{Addr: n.Addr(), TargetName: discOffIQN})
	if le, ok := loginError(err); !ok || le.Class != pdu.LoginInitiatorErr || le.Detail != pdu.LoginDetailNotFound {
		t.Errorf("login to the disabled target: %v; want status 0203 (target not found)", err)
	}
}

// TestDiscoveryIPv6 serves on [::1] and checks that discovery reports the
// portal in brackets and that a session over IPv6 moves data.
func TestDiscoveryIPv6(t *testing.T) {
	t.Parallel()
	if !canListen("::1") {
		t.Skip("no IPv6 loopback (::1) on this host: IPv6 portal NOT tested")
	}
	disks := makeDisks(t, "disk01", "disk02")
	n := nodetest.Start(t, discoveryConf(disks), nodetest.Options{Hosts: []string{"::1"}})
	ctx := testCtx(t, 60*time.Second)

	host, port, _ := net.SplitHostPort(n.Addr())
	if host != "::1" {
		t.Fatalf("node address %s", n.Addr())
	}
	targets, err := initiator.Discover(ctx, n.Addr(), "iqn.2024-01.io.hatarget:disc6")
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) != 2 {
		t.Fatalf("SendTargets=All: %+v", targets)
	}
	for _, tg := range targets {
		if len(tg.Portals) != 1 || tg.Portals[0].Addr != "[::1]:"+port {
			t.Errorf("%s portals %+v, want [::1]:%s", tg.Name, tg.Portals, port)
		}
	}
	s := dial(t, ctx, initiator.Config{Addr: targets[0].Portals[0].Addr, TargetName: targets[0].Name})
	if err := writeVerify(ctx, s, 0, 0, randomBytes(t, 128<<10), disks["disk01"]); err != nil {
		t.Fatal(err)
	}
}
