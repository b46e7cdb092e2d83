package cluster

import (
	"encoding/base64"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hatarget/hatarget/cluster/api"
)

func testKey(b byte) string {
	return base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(rune('a'+b)), 32)))
}

func keyringNode(t *testing.T, dir string, key string) (*Node, *lockedBuffer) {
	t.Helper()
	log := &lockedBuffer{}
	n := &Node{cfg: Config{Name: "n1", DataDir: dir}, log: slog.New(slog.NewTextHandler(log, nil)), network: NewNetwork()}
	if key != "" {
		k, err := ParseGossipKey(key)
		if err != nil {
			t.Fatal(err)
		}
		n.cfg.GossipKey = k
	}
	kr, err := n.openKeyring()
	if err != nil {
		t.Fatal(err)
	}
	n.keyring = kr
	return n, log
}

func TestParseGossipKey(t *testing.T) {
	for _, bad := range []string{"", "not base64!", base64.StdEncoding.EncodeToString(make([]byte, 20))} {
		if _, err := ParseGossipKey(bad); err == nil {
			t.Errorf("ParseGossipKey(%q) accepted", bad)
		}
	}
	for _, size := range []int{16, 24, 32} {
		if _, err := ParseGossipKey(base64.StdEncoding.EncodeToString(make([]byte, size))); err != nil {
			t.Errorf("a %d-byte key refused: %v", size, err)
		}
	}
}

func TestKeyringPlainWithoutKey(t *testing.T) {
	dir := t.TempDir()
	n, _ := keyringNode(t, dir, "")
	if n.keyring != nil {
		t.Fatal("a keyring without --gossip-key")
	}
	if _, err := os.Stat(filepath.Join(dir, keyringFile)); !os.IsNotExist(err) {
		t.Errorf("keyring file written without a key: %v", err)
	}
	if err := n.changeLocalKeyring(api.KeyringChange{Op: api.KeyringInstall, Key: testKey(1)}); err == nil {
		t.Error("installed a key into no keyring")
	}
}

// TestKeyringRotationSaved: install, use and remove change the keyring
// and the saved file (0600), which a restart loads over --gossip-key.
func TestKeyringRotationSaved(t *testing.T) {
	dir := t.TempDir()
	old, next := testKey(1), testKey(2)
	n, _ := keyringNode(t, dir, old)
	for _, c := range []api.KeyringChange{{Op: api.KeyringInstall, Key: next}, {Op: api.KeyringUse, Key: next}, {Op: api.KeyringRemove, Key: old}} {
		if err := n.changeLocalKeyring(c); err != nil {
			t.Fatalf("%s: %v", c.Op, err)
		}
	}
	if kn := n.localKeyring(); kn.Primary != next || !slices.Equal(kn.Keys, []string{next}) {
		t.Errorf("keyring after the rotation: %+v", kn)
	}
	fi, err := os.Stat(filepath.Join(dir, keyringFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("saved keyring: %v, mode %v", err, fi.Mode())
	}
	restarted, log := keyringNode(t, dir, old)
	if kn := restarted.localKeyring(); kn.Primary != next || len(kn.Keys) != 1 {
		t.Errorf("restarted with %+v; want the saved keyring", kn)
	}
	if !strings.Contains(log.String(), "not in the keyring this node saved") {
		t.Errorf("no warning that --gossip-key is ignored:\n%s", log)
	}
}

func TestKeyringRefusals(t *testing.T) {
	n, _ := keyringNode(t, t.TempDir(), testKey(1))
	for _, c := range []api.KeyringChange{
		{Op: "rotate", Key: testKey(2)},
		{Op: api.KeyringInstall, Key: "short"},
		{Op: api.KeyringUse, Key: testKey(3)},    // not installed
		{Op: api.KeyringRemove, Key: testKey(1)}, // the primary
	} {
		if err := n.changeLocalKeyring(c); err == nil {
			t.Errorf("%s %s accepted", c.Op, c.Key)
		}
	}
	if kn := n.localKeyring(); kn.Primary != testKey(1) || len(kn.Keys) != 1 {
		t.Errorf("refused changes changed the keyring: %+v", kn)
	}
}
