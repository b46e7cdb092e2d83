package security

import (
	"encoding/base64"
	"io"
	"log"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/hatarget/hatarget/test/nodetest"
)

// gossipRogues tries to join the cluster's gossip through addr from
// rogueIP without the key and with a wrong one: memberlist must refuse
// both, log it with the rogue's address, and no node may list the rogue.
func gossipRogues(t *testing.T, n1 *nodetest.Agent, addr, key string) {
	t.Helper()
	wrong := newGossipKey(t)
	if wrong == key {
		t.Fatal("the same key twice")
	}
	for name, k := range map[string]string{"no key": "", "wrong key": wrong} {
		ml, local := rogueMember(t, k)
		joined, err := ml.Join([]string{addr})
		if joined > 0 || err == nil {
			t.Errorf("gossip rogue with %s joined through %s (%d contacted)", name, addr, joined)
		}
		if !nodetest.Poll(5*time.Second, 50*time.Millisecond, func() bool { return logHas(n1.Logs(), "memberlist", rogueIP) }) {
			t.Errorf("n1 did not log the gossip rogue with %s from %s", name, local)
		}
		_ = ml.Shutdown()
	}
	if names := nodeMembers(t, n1); slices.Contains(names, "intruder") {
		t.Errorf("n1 lists the gossip rogue: %v", names)
	}
}

// rogueMember is a memberlist member named intruder on rogueIP, with key
// (base64) or without encryption.
func rogueMember(t *testing.T, key string) (*memberlist.Memberlist, string) {
	t.Helper()
	port := nodetest.FreePort(t, []string{rogueIP})
	mc := memberlist.DefaultLANConfig()
	mc.Name = "intruder"
	mc.BindAddr, mc.BindPort = rogueIP, port
	mc.AdvertiseAddr, mc.AdvertisePort = rogueIP, port
	mc.TCPTimeout = 2 * time.Second
	mc.LogOutput = io.Discard
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{rogueIP}, BindPort: port, Logger: log.New(io.Discard, "", 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	mc.Transport = rogueTransport{nt}
	if key != "" {
		k, err := base64.StdEncoding.DecodeString(key)
		if err != nil {
			t.Fatal(err)
		}
		mc.SecretKey = k
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	return ml, net.JoinHostPort(rogueIP, strconv.Itoa(port))
}

// rogueTransport dials from rogueIP too: memberlist's own transport binds
// only its listeners, and the nodes' logs are searched for the address.
type rogueTransport struct{ *memberlist.NetTransport }

func (r rogueTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(rogueIP)}}
	return d.Dial("tcp", addr)
}

func (r rogueTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return r.DialTimeout(a.Addr, timeout)
}
