package scsi

import (
	"testing"
	"time"

	"github.com/hatarget/hatarget/alua"
)

// clusterGroups is a three-node LU as the harness nexus (port group 3)
// sees it: group 1 owns the LU, groups 2 and 3 are in the states given.
func clusterGroups(g2, g3 alua.State) []alua.Group {
	return []alua.Group{
		{ID: 1, State: alua.ActiveOptimized, Preferred: true, Ports: []uint16{1}},
		{ID: 2, State: g2, Ports: []uint16{2}},
		{ID: 3, State: g3, Ports: []uint16{7}},
	}
}

// newClusterHarness is a harness whose LU has port groups: it starts
// active/non-optimized everywhere (so the harness can clear its power-on
// unit attention) and then moves to groups, consuming the unit attention
// the change raises.
func newClusterHarness(t *testing.T, groups []alua.Group) *harness {
	t.Helper()
	h := newHarness(t, func(c *LUConfig) { c.PortGroups = clusterGroups(alua.ActiveNonOptimized, alua.ActiveNonOptimized) })
	cfg := h.lu.state.Load().cfg
	cfg.PortGroups = groups
	if err := h.lu.Update(cfg); err != nil {
		t.Fatal(err)
	}
	h.run([]byte{opRequestSense, 0, 0, 0, 252, 0}, nil, 252)
	return h
}

func TestALUAGating(t *testing.T) {
	notReady := func(code uint16) want { return wantSense(KeyNotReady, code) }
	for _, tc := range []struct {
		state                alua.State
		read, tur, inq, rtpg want
	}{
		{alua.ActiveOptimized, good, good, good, good},
		{alua.ActiveNonOptimized, good, good, good, good},
		{alua.Standby, notReady(0x040b), notReady(0x040b), good, good},
		{alua.Unavailable, notReady(0x040c), notReady(0x040c), good, good},
		{alua.Transitioning, notReady(0x040a), notReady(0x040a), good, good},
	} {
		t.Run(tc.state.String(), func(t *testing.T) {
			h := newClusterHarness(t, clusterGroups(alua.ActiveNonOptimized, tc.state))
			tc.read.check(t, first(h.run(cdbRW10(opRead10, 0, 1, 0), nil, 512)))
			tc.tur.check(t, first(h.run(cdbTUR(), nil, 0)))
			tc.inq.check(t, first(h.run(cdbInquiry(false, 0, 96), nil, 96)))
			tc.rtpg.check(t, first(h.run(cdbMaintIn(saReportTPG, 0, 0, 0, 256), nil, 256)))
		})
	}
}

func TestALUAReportsEveryGroup(t *testing.T) {
	h := newClusterHarness(t, clusterGroups(alua.ActiveNonOptimized, alua.Standby))
	res, d := h.run(cdbMaintIn(saReportTPG, 0, 0, 0, 256), nil, 256)
	good.check(t, res)
	if len(d) != 4+3*12 || getU32(d) != uint32(len(d)-4) {
		t.Fatalf("RTPG % x: want three groups of one port", d)
	}
	want := []struct {
		b0    byte
		group uint16
		port  uint16
	}{{0x80, 1, 1}, {0x01, 2, 2}, {0x02, 3, 7}}
	for i, w := range want {
		g := d[4+12*i:]
		if g[0] != w.b0 || g[1] != byte(alua.Implemented) || getU16(g[2:]) != w.group || g[7] != 1 || getU16(g[10:]) != w.port {
			t.Errorf("group %d: % x, want state byte %#x group %d port %d", i, g[:12], w.b0, w.group, w.port)
		}
	}
}

func TestALUAStateChangeRaisesUA(t *testing.T) {
	var cfg LUConfig
	h := newHarness(t, func(c *LUConfig) {
		c.PortGroups = clusterGroups(alua.ActiveNonOptimized, alua.ActiveNonOptimized)
		cfg = *c
	})
	cfg.PortGroups = clusterGroups(alua.ActiveNonOptimized, alua.ActiveNonOptimized)
	if err := h.lu.Update(cfg); err != nil {
		t.Fatal(err)
	}
	good.check(t, first(h.run(cdbTUR(), nil, 0))) // same states: no unit attention
	cfg.PortGroups = clusterGroups(alua.Standby, alua.ActiveNonOptimized)
	if err := h.lu.Update(cfg); err != nil {
		t.Fatal(err)
	}
	wantSense(KeyUnitAttention, ascAsymmetricAccessChanged).check(t, first(h.run(cdbTUR(), nil, 0)))
	good.check(t, first(h.run(cdbTUR(), nil, 0)))
}

// A session logged in before the LU's ALUA states changed, meeting the LU
// only after (its commands had gone to the old owner), gets ASYMMETRIC
// ACCESS STATE CHANGED after POWER ON, RESET, so that the initiator
// re-reads the path states at once. A session logged in since, a nexus
// another node forwards, and any nexus of an LU whose states never
// changed get POWER ON, RESET alone: libiscsi fails its connection on
// any other unit attention.
func TestNexusOlderThanTakeoverGetsStateChanged(t *testing.T) {
	var cfg LUConfig
	h := newHarness(t, func(c *LUConfig) {
		c.PortGroups = clusterGroups(alua.ActiveNonOptimized, alua.ActiveOptimized)
		cfg = *c
	})
	established := func(name string, isid byte, at time.Time) *Nexus {
		n := testNexus(name, isid)
		n.Established = at
		return n
	}
	powerOnOnly := func(n *Nexus) {
		t.Helper()
		wantSense(KeyUnitAttention, ascPowerOnReset).check(t, first(h.exec(n, cdbTUR(), nil, 0)))
		good.check(t, first(h.exec(n, cdbTUR(), nil, 0)))
	}
	powerOnOnly(established("iqn.1994-05.com.example:early", 2, time.Now()))
	older := established("iqn.1994-05.com.example:older", 3, time.Now())
	time.Sleep(time.Millisecond) // a coarse clock must still order them

	cfg.PortGroups = clusterGroups(alua.ActiveOptimized, alua.ActiveNonOptimized)
	if err := h.lu.Update(cfg); err != nil {
		t.Fatal(err)
	}
	wantSense(KeyUnitAttention, ascPowerOnReset).check(t, first(h.exec(older, cdbTUR(), nil, 0)))
	wantSense(KeyUnitAttention, ascAsymmetricAccessChanged).check(t, first(h.exec(older, cdbTUR(), nil, 0)))
	good.check(t, first(h.exec(older, cdbTUR(), nil, 0)))
	powerOnOnly(established("iqn.1994-05.com.example:newer", 4, time.Now()))
	powerOnOnly(testNexus("iqn.1994-05.com.example:forwarded", 5))
}
