package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hatarget/hatarget/fsm"
	"github.com/hatarget/hatarget/target/durable"
)

// A node's incarnation names its data directory: made with it, kept in
// it, gossiped, and recorded in the node's Raft record. A node whose data
// directory was wiped comes back under the same name with a new one, and
// the leader then treats it as the stranger it is: its copies of
// replicated LUNs leave the in-sync sets under a new epoch (so their
// owners compare them in full instead of trusting them), a LUN it owned
// moves to an in-sync copy, and it rejoins Raft as a new voter (its vote
// of the current term is gone with its data). Until its record carries
// the new incarnation, the node owns nothing (dataplaneConfig): its
// empty copy must not serve a LUN it used to own.

const incarnationFile = "incarnation"

// loadIncarnation returns the incarnation of dataDir, making one when it
// has none: a new data directory, a wiped one, or one of a release
// before incarnations.
func loadIncarnation(dataDir string) (string, error) {
	path := filepath.Join(dataDir, incarnationFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if id := strings.TrimSpace(string(b)); validIncarnation(id) {
			return id, nil
		}
		return "", fmt.Errorf("cluster: %s holds %q, not an incarnation; remove it only if this data dir was wiped", path, b)
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("cluster: reading the node's incarnation: %w", err)
	}
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("cluster: making the node's incarnation: %w", err)
	}
	id := hex.EncodeToString(raw[:])
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}
	if err := durable.WriteFile(path, []byte(id+"\n")); err != nil {
		return "", fmt.Errorf("cluster: saving the node's incarnation: %w", err)
	}
	return id, nil
}

func validIncarnation(id string) bool {
	_, err := hex.DecodeString(id)
	return err == nil && len(id) == 16
}

// reincarnated reports whether the registered record of a node and what
// the node now gossips disagree on its incarnation: its data dir was
// wiped. A record or a node without one (older releases) says nothing.
func reincarnated(stored *fsm.Node, gossiped string) bool {
	return stored != nil && stored.Incarnation != "" && gossiped != "" && stored.Incarnation != gossiped
}
