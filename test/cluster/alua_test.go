package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/test/nodetest"
)

// TestALUAGroups: every node reports the same LU identity and the same
// three port groups for a LUN, exactly one of them (the owner's)
// active/optimized and the others active/non-optimized; each node's VPD
// 0x83 names its own port group.
func TestALUAGroups(t *testing.T) {
	c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{})
	c.WaitLeader(t, 15*time.Second)
	mustCLI(t, c, 1, "target", "create", tgtIQN)
	mustCLI(t, c, 2, sharedLUNArgs(c, "0", "alua0", "--size", "16M")...)
	var lun api.LUN
	decodeJSON(t, mustCLI(t, c, 3, "lun", "show", "alua0", "-o", "json"), &lun)
	st := status(t, c, 1)
	groupOf := map[string]uint16{}
	for _, n := range st.Nodes {
		groupOf[n.Name] = n.PortGroup
	}
	if lun.Owner == "" || groupOf[lun.Owner] == 0 {
		t.Fatalf("LUN owner %q (port groups %v): want an owner with a port group", lun.Owner, groupOf)
	}
	var naa []byte
	for i, a := range c.Nodes() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		s := dialWhenServed(ctx, t, a.ISCSIAddr())
		groups := reportTargetPortGroups(ctx, t, s, 0)
		if len(groups) != 3 {
			t.Fatalf("node %d: %d port groups %v, want 3", i+1, len(groups), groups)
		}
		for id, state := range groups {
			want := byte(0x01) // active/non-optimized
			if id == groupOf[lun.Owner] {
				want = 0x00
			}
			if state != want {
				t.Errorf("node %d reports group %d in state %#x, want %#x (owner %s in group %d)", i+1, id, state, want, lun.Owner, groupOf[lun.Owner])
			}
		}
		luNAA, portGroup := deviceID(ctx, t, s)
		if naa == nil {
			naa = luNAA
		} else if !bytes.Equal(naa, luNAA) {
			t.Errorf("node %d: NAA % x, node 1 % x: the LU must look the same on every path", i+1, luNAA, naa)
		}
		if portGroup != groupOf[a.Name] {
			t.Errorf("node %d (%s) reports target port group %d in VPD 0x83, want %d", i+1, a.Name, portGroup, groupOf[a.Name])
		}
		s.Close()
		cancel()
	}
	t.Logf("owner %s (group %d); groups %v agree on all three nodes", lun.Owner, groupOf[lun.Owner], groupOf)

	// With --non-owner standby only the owner's path gives media access.
	mustCLI(t, c, 3, sharedLUNArgs(c, "1", "standby1", "--size", "16M", "--non-owner", "standby")...)
	var sb api.LUN
	decodeJSON(t, mustCLI(t, c, 1, "lun", "show", "standby1", "-o", "json"), &sb)
	for i, a := range c.Nodes() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		s := dialWhenServed(ctx, t, a.ISCSIAddr())
		read := []byte{0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0}
		r, err := doClearingUA(ctx, s, 1, read, make([]byte, 512))
		owner := a.Name == sb.Owner
		switch {
		case err != nil:
			t.Fatalf("node %d: READ: %v", i+1, err)
		case owner && r.Status != 0:
			t.Errorf("node %d owns standby1 but READ failed: status %#x sense % x", i+1, r.Status, r.Sense)
		case !owner && (r.Status != 2 || len(r.Sense) < 14 || r.Sense[2]&0x0f != 2 || r.Sense[12] != 0x04 || r.Sense[13] != 0x0b):
			t.Errorf("node %d is standby for standby1 but READ gave status %#x sense % x, want NOT READY 04/0B", i+1, r.Status, r.Sense)
		}
		for id, state := range reportTargetPortGroups(ctx, t, s, 1) {
			want := byte(0x02)
			if id == groupOf[sb.Owner] {
				want = 0x00
			}
			if state != want {
				t.Errorf("node %d reports group %d of standby1 in state %#x, want %#x", i+1, id, state, want)
			}
		}
		s.Close()
		cancel()
	}
}

// TestMoveAndDrain: lun move hands the active/optimized group to another
// node, whose paths report it (after a unit attention); node drain moves
// every LUN a node owns away.
func TestMoveAndDrain(t *testing.T) {
	c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{})
	c.WaitLeader(t, 15*time.Second)
	mustCLI(t, c, 1, "target", "create", tgtIQN)
	for i, name := range []string{"m0", "m1", "m2"} {
		mustCLI(t, c, 2, sharedLUNArgs(c, fmt.Sprint(i), name, "--size", "16M")...)
	}
	st := status(t, c, 1)
	groupOf := map[string]uint16{}
	for _, n := range st.Nodes {
		groupOf[n.Name] = n.PortGroup
	}
	var l api.LUN
	decodeJSON(t, mustCLI(t, c, 1, "lun", "show", "m0", "-o", "json"), &l)
	to := "n1"
	if l.Owner == to {
		to = "n2"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := dialWhenServed(ctx, t, c.Node(3).ISCSIAddr())
	defer s.Close()
	start := time.Now()
	out := mustCLI(t, c, 3, "lun", "move", "m0", "--to", to)
	t.Logf("%s (%s)", strings.TrimSpace(out), time.Since(start).Round(time.Millisecond))
	// While the move commits, commands forwarded with the old epoch are
	// answered "transitioning" (04/0A), which initiators retry.
	var groups map[uint16]byte
	ok := nodetest.Poll(5*time.Second, 50*time.Millisecond, func() bool {
		_, _ = doClearingUA(ctx, s, 0, []byte{0, 0, 0, 0, 0, 0}, nil)
		var err error
		groups, err = tryReportTargetPortGroups(ctx, s, 0)
		return err == nil && groups[groupOf[to]] == 0 && groups[groupOf[l.Owner]] == 1
	})
	if !ok {
		t.Fatalf("node 3 does not report %s (group %d) active/optimized for m0 after the move: %v", to, groupOf[to], groups)
	}

	out = mustCLI(t, c, 1, "node", "drain", to)
	t.Logf("drain: %s", strings.TrimSpace(out))
	var luns []api.LUN
	decodeJSON(t, mustCLI(t, c, 2, "lun", "list", "-o", "json"), &luns)
	for _, l := range luns {
		if l.Owner == to || l.Owner == "" {
			t.Errorf("after draining %s, LUN %s is owned by %q", to, l.Name, l.Owner)
		}
	}
	if _, err := c.CLI(t, 1, "lun", "move", "m1", "--to", to); err == nil {
		t.Errorf("moving a LUN to the drained node %s succeeded", to)
	}
	mustCLI(t, c, 1, "node", "undrain", to)
	mustCLI(t, c, 1, "lun", "move", "m1", "--to", to)
}

// doClearingUA sends a command, again after unit attentions (a new LUN
// reports REPORTED LUNS DATA HAS CHANGED and power on to each nexus).
func doClearingUA(ctx context.Context, s *initiator.Session, lun uint64, cdb, buf []byte) (initiator.Response, error) {
	for range 4 {
		r, err := s.Do(ctx, lun, cdb, nil, buf)
		if err != nil || r.Status != 2 || len(r.Sense) < 3 || r.Sense[2]&0x0f != 6 {
			return r, err
		}
	}
	return s.Do(ctx, lun, cdb, nil, buf)
}

// dialWhenServed logs in once the node serves the target, and clears the
// power-on unit attention.
func dialWhenServed(ctx context.Context, t *testing.T, addr string) *initiator.Session {
	t.Helper()
	for {
		s, err := initiator.Dial(ctx, initiator.Config{Addr: addr, TargetName: tgtIQN})
		if err == nil {
			for range 3 {
				if r, err := s.Do(ctx, 0, []byte{0, 0, 0, 0, 0, 0}, nil, nil); err == nil && r.Status == 0 {
					return s
				}
			}
			s.Close()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never served %s: %v", addr, tgtIQN, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// reportTargetPortGroups returns the state of every group REPORT TARGET
// PORT GROUPS lists.
func reportTargetPortGroups(ctx context.Context, t *testing.T, s *initiator.Session, lun uint64) map[uint16]byte {
	t.Helper()
	groups, err := tryReportTargetPortGroups(ctx, s, lun)
	if err != nil {
		t.Fatal(err)
	}
	return groups
}

func tryReportTargetPortGroups(ctx context.Context, s *initiator.Session, lun uint64) (map[uint16]byte, error) {
	buf := make([]byte, 512)
	cdb := []byte{0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0}
	r, err := s.Do(ctx, lun, cdb, nil, buf)
	if err != nil || r.Status != 0 {
		return nil, fmt.Errorf("REPORT TARGET PORT GROUPS: %v status %#x sense % x", err, r.Status, r.Sense)
	}
	n := int(binary.BigEndian.Uint32(buf)) + 4
	out := map[uint16]byte{}
	for off := 4; off+8 <= n; {
		d := buf[off:]
		out[binary.BigEndian.Uint16(d[2:])] = d[0] & 0x0f
		off += 8 + 4*int(d[7])
	}
	return out, nil
}

// deviceID returns the LU's NAA designator and the port's target port
// group from VPD page 0x83.
func deviceID(ctx context.Context, t *testing.T, s *initiator.Session) ([]byte, uint16) {
	t.Helper()
	buf := make([]byte, 512)
	r, err := s.Do(ctx, 0, []byte{0x12, 0x01, 0x83, 0x02, 0x00, 0}, nil, buf)
	if err != nil || r.Status != 0 {
		t.Fatalf("INQUIRY VPD 0x83: %v status %#x", err, r.Status)
	}
	var naa []byte
	var group uint16
	end := 4 + int(binary.BigEndian.Uint16(buf[2:]))
	for off := 4; off+4 <= end; {
		d := buf[off:]
		length := int(d[3])
		assoc, typ := (d[1]>>4)&0x3, d[1]&0x0f
		switch {
		case assoc == 0 && typ == 3:
			naa = append([]byte{}, d[4:4+length]...)
		case assoc == 1 && typ == 5:
			group = binary.BigEndian.Uint16(d[6:])
		}
		off += 4 + length
	}
	return naa, group
}
